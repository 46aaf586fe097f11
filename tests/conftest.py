import pytest
from django.core.cache import cache

from proxy import config
from tests.upstream import UpstreamServer


@pytest.fixture
def upstream():
    """A real HTTP server on 127.0.0.1; set `.reply` to shape its answers."""
    server = UpstreamServer()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def fresh_state():
    """Each test starts with an empty cache (quota counters, breaker state) and reloads its config."""
    cache.clear()
    config.invalidate()
    yield
    config.invalidate()


@pytest.fixture
def cluster(tmp_path):
    """Real gateway servers sharing a database of their own (see tests/servers.py)."""
    from tests.servers import GatewayCluster

    made = GatewayCluster(tmp_path)
    yield made
    made.close()
