import os
import threading
import time

import pytest
from django.core.cache import cache
from hypothesis import settings as hypothesis_settings

from proxy import config
from tests.private_postgres import private_pg  # noqa: F401 (a fixture, for every test)
from tests.upstream import UpstreamServer

# How many examples the property tests generate (tests/examples.py): `fast` by default, `ci` (ten
# times as many) with HYPOTHESIS_PROFILE=ci, as .ci/run sets it.
hypothesis_settings.register_profile("fast", max_examples=10)
hypothesis_settings.register_profile("ci", max_examples=100)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "fast"))


@pytest.fixture
def upstream():
    """A real HTTP server on 127.0.0.1; set `.reply` to shape its answers."""
    server = UpstreamServer()
    yield server
    server.stop()


# Fixtures that start real processes: gunicorn servers, jobs workers, a private PostgreSQL or Redis.
SLOW_FIXTURES = {
    "cluster",
    "jobs_cluster",
    "outage_cluster",
    "own_redis",
    "persistent_redis",
    "private_pg",
    "private_postgres",
}
# Fixtures that drive a real Chromium.
BROWSER_FIXTURES = {"chromium", "page"}


def pytest_collection_modifyitems(items):
    """Tests that start real servers or processes are `slow`, browser tests are `browser` and `slow`:
    `make test-fast` (`-m "not slow and not browser"`) leaves them all out. Marked here from the
    fixtures a test takes, so a new test is marked by what it uses, not by remembering to."""
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if fixtures & BROWSER_FIXTURES or item.get_closest_marker("browser"):
            item.add_marker(pytest.mark.browser)
            item.add_marker(pytest.mark.slow)
        elif fixtures & SLOW_FIXTURES:
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
def production_timing(settings, transactional_db):
    """Production's timing for one test, where tests/settings.py has 0 for both: the configuration
    copy is checked every GATEWAY_CONFIG_TTL=1 s, and log rows are queued by the calls and written
    in batches by the background writer every GATEWAY_LOG_FLUSH_SECONDS=0.5 s. Transactional: the
    writer writes on a connection of its own, which sees only committed rows."""
    from proxy import recording, runtime

    settings.GATEWAY_CONFIG_TTL = 1
    settings.GATEWAY_LOG_FLUSH_SECONDS = 0.5
    config.invalidate()
    # A writer started by an earlier test may sleep out that test's interval (some use 60 s):
    # wake it so it takes this one.
    runtime.current().log_writer.wake.set()
    yield
    recording.flush()  # rows still queued are this test's: written before its tables are emptied
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


@pytest.fixture(scope="session", autouse=True)
def serial_live_server_on_memory_sqlite():
    """The browser tests' live server serves one request at a time on in-memory SQLite."""
    from django.db import connection
    from django.test.testcases import LiveServerThread

    from tests.browser import SerialWSGIServer

    if connection.vendor == "sqlite" and connection.is_in_memory_db():
        LiveServerThread.server_class = SerialWSGIServer


@pytest.fixture
def chromium(monkeypatch):
    """Debian's Chromium, headless, launched by Playwright."""
    from django.db import connections

    from tests.browser import CHROMIUM, CHROMIUM_ARGS

    sync_api = pytest.importorskip("playwright.sync_api")
    # Playwright's sync API runs an event loop in this thread; the test's own ORM calls are still synchronous.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()
        # While Playwright's loop runs, Django gives this code a connection of its own (async
        # context); close it, or PostgreSQL cannot drop the test database at the end.
        connections.close_all()


@pytest.fixture
def page(chromium):
    """A desktop-sized page (1280 x 900) in that browser."""
    page = chromium.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(15_000)
    return page


@pytest.fixture
def fresh_runtime():
    """A runtime of the test's own (proxy/runtime.py: configuration copy, log writer, balancer,
    SSRF verdicts, ...) in place of the process's; the process's is back after the test."""
    from proxy import runtime

    live = runtime.build()
    previous = runtime.replace(live)
    yield live
    runtime.replace(previous)
    live.log_writer.closed = True  # its thread, if one started, ends at its next wake
    live.log_writer.wake.set()
