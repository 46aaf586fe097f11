import threading
import time

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


def pytest_collection_modifyitems(items):
    """Tests that start real gunicorn servers are `slow`: `pytest -m "not slow"` leaves them out."""
    for item in items:
        if "cluster" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)


class Clock:
    """A wall clock that moves only when told to."""

    def __init__(self):
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch):
    """The circuit breakers' clock, moved by the test (`clock.advance(30)`) instead of sleeping."""
    from proxy import breaker

    fake = Clock()
    monkeypatch.setattr(breaker, "now", fake)
    return fake


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


@pytest.fixture
def servers():
    """Up to four extra upstreams, stopped at the end."""
    made = []

    def make(reply=None):
        server = UpstreamServer()
        if reply is not None:
            server.reply = reply
        made.append(server)
        return server

    yield make
    stopping = [threading.Thread(target=server.stop) for server in made]  # each stop waits ~0.5 s
    for thread in stopping:
        thread.start()
    for thread in stopping:
        thread.join()
