"""Limits hold exactly on real gateway servers (gunicorn, the production config).

With REDIS_URL set, two server processes (two gunicorn workers each) share Redis (and PostgreSQL when DATABASE_URL is set);
without it, one server process in the default configuration (one gevent worker, counters in
the process) must be just as exact.
"""

import json
import os
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from django_ratelimit import core as ratelimit

from tests.servers import GatewayCluster
from tests.upstream import UpstreamServer, sse_reply

CLIENTS = 50
TWO_SERVERS = pytest.param(
    2,
    marks=pytest.mark.skipif(
        not os.environ.get("REDIS_URL"),
        reason="two server processes share counters only through Redis: set REDIS_URL (the default, "
        "without Redis, is one process, tested by the 1-server variant)",
    ),
    id="two-servers",
)
SERVERS = [pytest.param(1, id="one-server"), TWO_SERVERS]


class CountingUpstream(UpstreamServer):
    """An upstream that answers after `delay` seconds and records the most calls it had at once."""

    def __init__(self, delay: float = 0.0):
        super().__init__()
        self.httpd.socket.listen(256)  # 50 clients connect at once; the default backlog of 5 refuses some
        self.lock = threading.Lock()
        self.in_flight = self.max_in_flight = 0
        self.reply = self._reply
        self.delay = delay

    def _reply(self, handler):
        with self.lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            time.sleep(self.delay)
        finally:
            # Counted until the answer starts, not until it is sent: the gateway may free the slot
            # and send the next call as soon as it has the answer, before this thread runs again
            # (50 client threads share the GIL here). A call is counted only while its slot is held.
            with self.lock:
                self.in_flight -= 1
        handler.send_json(200, {"ok": True})


@pytest.fixture(scope="module")
def upstream_server():
    server = CountingUpstream()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def gateways(tmp_path_factory, upstream_server):
    """{1: [one server], 2: [two servers]} on one database; the pair only with Redis."""
    cluster = GatewayCluster(tmp_path_factory.mktemp("quota-servers"))
    cluster.shell(
        "from routes_admin.models import Route, UpstreamTarget\n"
        "route = Route.objects.create(name='r', path_prefix='/v1', max_attempts=1)\n"
        f"UpstreamTarget.objects.create(route=route, url='{upstream_server.url}')\n"
    )
    servers = {1: [cluster.start()]}
    if os.environ.get("REDIS_URL"):
        servers[2] = [cluster.start(workers=2), cluster.start(workers=2)]  # two instances, two workers each
    yield cluster, servers
    cluster.close()


def make_keys(cluster, count: int, **limits) -> list[tuple[int, str]]:
    """`count` keys on one new plan: [(id, secret)]."""
    out = cluster.shell(
        "import json\n"
        "from routes_admin.models import APIKey, QuotaPlan\n"
        f"plan = QuotaPlan.objects.create(name='plan-' + str(QuotaPlan.objects.count()), **{limits!r})\n"
        "keys = [APIKey.objects.issue(name='k', all_routes=True, quota_plan=plan) for _ in range(%d)]\n"
        % count
        + "print(json.dumps([(key.id, secret) for key, secret in keys]))"
    )
    return [tuple(pair) for pair in json.loads(out)]


def key_for_a_whole_burst(cluster, needed: float = 25) -> str:
    """A key limited to 100 per minute whose window has `needed` seconds left (windows are fixed
    and each key's has its own offset), so the burst never straddles two windows."""
    keys = make_keys(cluster, 6, requests_per_minute=100)
    left = {secret: ratelimit._get_window(f"k{key_id}", 60) - time.time() for key_id, secret in keys}
    secret = max(left, key=left.get)
    if left[secret] < needed:
        time.sleep(left[secret] + 0.5)  # rare: all six windows end soon; the next one is whole
    return secret


def burst(urls: list[str], secret: str, calls: int, path: str = "/v1/chat/completions") -> list[requests.Response]:
    """`calls` calls from CLIENTS concurrent clients, spread over the servers."""
    local = threading.local()

    def one(n: int) -> requests.Response:
        if not hasattr(local, "session"):
            local.session = requests.Session()
        return local.session.post(
            urls[n % len(urls)] + path, json={"model": "m"}, headers={"Authorization": f"Bearer {secret}"}, timeout=30
        )

    with ThreadPoolExecutor(CLIENTS) as pool:
        return list(pool.map(one, range(calls)))


def logged(cluster, secret: str, status: int, limit: str) -> int:
    """RequestLog rows of this key with this status and limit, once the servers flushed them."""
    code = (
        "from routes_admin.models import APIKey, RequestLog\n"
        f"key = APIKey.objects.for_secret({secret!r})\n"
        f"print(RequestLog.objects.filter(api_key=key, status={status}, limit={limit!r}).count())"
    )
    count = -1
    for _ in range(20):  # rows are written in batches every GATEWAY_LOG_FLUSH_SECONDS
        count = int(cluster.shell(code))
        if count:
            return count
        time.sleep(0.3)
    return count


@pytest.mark.slow
@pytest.mark.parametrize("server_count", SERVERS)
def test_exactly_100_of_200_calls_pass_a_limit_of_100_per_minute(gateways, upstream_server, server_count):
    cluster, servers = gateways
    urls = [server.url for server in servers[server_count]]
    secret = key_for_a_whole_burst(cluster)
    before = len(upstream_server.requests)

    responses = burst(urls, secret, 200)

    statuses = Counter(r.status_code for r in responses)
    print(f"{server_count} server(s), {CLIENTS} clients, 200 calls, limit 100/min: {dict(statuses)}")
    assert statuses == {200: 100, 429: 100}
    assert len(upstream_server.requests) - before == 100
    refused = [r for r in responses if r.status_code == 429]
    assert {r.json()["error"]["type"] for r in refused} == {"rate_limit_exceeded"}
    assert all(r.headers["RateLimit"].startswith('"requests_per_minute";r=0;t=') for r in refused)
    assert all(int(r.headers["Retry-After"]) >= 1 for r in refused)
    assert logged(cluster, secret, 429, "requests_per_minute") == 100


@pytest.mark.slow
@pytest.mark.parametrize("server_count", SERVERS)
def test_never_more_than_4_calls_at_the_upstream_with_a_concurrency_cap_of_4(gateways, upstream_server, server_count):
    cluster, servers = gateways
    urls = [server.url for server in servers[server_count]]
    ((_, secret),) = make_keys(cluster, 1, max_concurrent=4)
    upstream_server.delay, upstream_server.max_in_flight = 0.3, 0
    try:
        responses = burst(urls, secret, 120)
        peak = upstream_server.max_in_flight
        statuses = Counter(r.status_code for r in responses)
        print(f"{server_count} server(s), {CLIENTS} clients, cap 4: peak at the upstream {peak}, {dict(statuses)}")
        assert peak == 4  # reached, never exceeded
        others = [r.text[:300] for r in responses if r.status_code not in (200, 429)]
        assert statuses[200] >= 4 and statuses[200] + statuses[429] == 120, others
        refused = [r for r in responses if r.status_code == 429]
        assert {r.json()["error"]["type"] for r in refused} == {"rate_limit_exceeded"}
        assert {r.headers["Retry-After"] for r in refused} == {"1"}
        # Every slot was given back: four calls at once all pass again.
        assert Counter(r.status_code for r in burst(urls, secret, 4)) == {200: 4}
    finally:
        upstream_server.delay = 0.0


@pytest.mark.slow
def test_a_client_leaving_mid_stream_frees_its_slot_on_a_real_server(gateways, upstream_server):
    cluster, servers = gateways
    url = servers[1][0].url
    ((_, secret),) = make_keys(cluster, 1, max_concurrent=1)
    headers = {"Authorization": f"Bearer {secret}"}
    upstream_server.reply = sse_reply([{"n": n} for n in range(100)], interval=0.02)
    try:
        stream = requests.post(
            f"{url}/v1/chat/completions", json={"stream": True}, headers=headers, stream=True, timeout=10
        )
        assert stream.status_code == 200
        assert next(stream.iter_content(None)).startswith(b"data:")
        busy = requests.post(f"{url}/v1/chat/completions", json={}, headers=headers, timeout=10)
        assert busy.status_code == 429 and busy.json()["error"]["message"].startswith("This API key already has 1")
        stream.close()  # the client goes away in the middle of the stream
        upstream_server.reply = upstream_server._reply

        deadline, status = time.monotonic() + 10, None
        while time.monotonic() < deadline:  # the server notices at its next write
            status = requests.post(f"{url}/v1/chat/completions", json={}, headers=headers, timeout=10).status_code
            if status == 200:
                break
            time.sleep(0.1)
        assert status == 200
    finally:
        upstream_server.reply = upstream_server._reply
