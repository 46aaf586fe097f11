"""Two gateway instances on two ports sharing one database (and Redis when REDIS_URL is set).

What an operator running several instances behind a load balancer relies on: one log row per
call whichever instance served it, quotas counted exactly across instances, and one breaker.
"""

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.servers import free_port

needs_redis = pytest.mark.skipif(
    not os.environ.get("REDIS_URL"),
    reason="instances share quota counters and breaker state through Redis: set REDIS_URL to run this",
)


def issue(cluster, upstream_url: str, limits: str = "", **route) -> str:
    return cluster.route_and_key(upstream_url, limits, **{"name": "shared", **route})


def rows(cluster) -> list:
    out = cluster.shell(
        "import json\nfrom routes_admin.models import RequestLog\n"
        "print(json.dumps([[r.request_id, r.status, r.targets_tried] for r in RequestLog.objects.all()]))"
    )
    return json.loads(out)


def wait_for_rows(cluster, count: int, timeout: float = 10) -> list:
    deadline = time.monotonic() + timeout
    found = rows(cluster)
    while len(found) < count and time.monotonic() < deadline:
        time.sleep(0.3)
        found = rows(cluster)
    return found


def post(gateway, secret: str, request_id: str = "") -> requests.Response:
    headers = {"Authorization": f"Bearer {secret}"}
    if request_id:
        headers["X-Request-ID"] = request_id
    return requests.post(f"{gateway.url}/v1/chat/completions", json={}, headers=headers, timeout=10)


@pytest.mark.slow
def test_every_call_has_exactly_one_log_row_across_instances(cluster, upstream):
    upstream.reply = lambda handler: handler.send_json(200, {"ok": True})
    secret = issue(cluster, upstream.url)
    instances = [cluster.start(workers=2), cluster.start(workers=2)]
    ids = [f"call-{i}" for i in range(60)]
    with ThreadPoolExecutor(12) as pool:
        statuses = list(pool.map(lambda i: post(instances[i % 2], secret, ids[i]).status_code, range(60)))
    assert statuses == [200] * 60
    logged = wait_for_rows(cluster, 60)
    time.sleep(1)  # a duplicate would arrive with a later batch
    logged = rows(cluster)
    assert sorted(request_id for request_id, _, _ in logged) == sorted(ids)


@needs_redis
@pytest.mark.slow
def test_request_quota_is_exact_across_instances(cluster, upstream):
    upstream.reply = lambda handler: handler.send_json(200, {"ok": True})
    secret = issue(cluster, upstream.url, limits="requests_per_day=10")
    instances = [cluster.start(workers=2), cluster.start(workers=2)]
    with ThreadPoolExecutor(10) as pool:
        statuses = list(pool.map(lambda i: post(instances[i % 2], secret).status_code, range(30)))
    assert statuses.count(200) == 10
    assert statuses.count(429) == 20
    assert len(wait_for_rows(cluster, 30)) == 30  # refusals are logged too


@needs_redis
@pytest.mark.slow
def test_concurrency_limit_is_exact_across_instances(cluster, upstream):
    def slow(handler):
        time.sleep(1.5)
        handler.send_json(200, {"ok": True})

    upstream.reply = slow
    secret = issue(cluster, upstream.url, limits="max_concurrent=3")
    instances = [cluster.start(), cluster.start()]
    with ThreadPoolExecutor(10) as pool:
        statuses = list(pool.map(lambda i: post(instances[i % 2], secret).status_code, range(10)))
    assert statuses.count(200) == 3
    assert statuses.count(429) == 7
    # The slots were given back: the next calls are admitted again, on either instance.
    assert post(instances[0], secret).status_code == 200
    assert post(instances[1], secret).status_code == 200


@needs_redis
@pytest.mark.slow
def test_breaker_opened_by_one_instance_is_honoured_by_the_other(cluster, upstream):
    upstream.reply = lambda handler: handler.send_json(200, {"ok": True})
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens: connection refused
    secret = cluster.shell(
        "from routes_admin.models import APIKey, Route, UpstreamTarget\n"
        "route = Route.objects.create(name='pair', path_prefix='/v1', strategy='failover')\n"
        f"UpstreamTarget.objects.create(route=route, name='dead', url='{dead}', position=0)\n"
        f"UpstreamTarget.objects.create(route=route, name='alive', url='{upstream.url}', position=1)\n"
        "key, secret = APIKey.objects.issue(name='k', all_routes=True)\n"
        "print(secret)"
    ).strip()
    breaker = {"GATEWAY_BREAKER_FAILURES": 2, "GATEWAY_BREAKER_COOLDOWN": 60}
    first, second = cluster.start(**breaker), cluster.start(**breaker)
    for i in range(2):  # two failures seen by the first instance open the breaker
        assert post(first, secret, f"open-{i}").status_code == 200
    assert post(second, secret, "after").status_code == 200
    logged = {request_id: tried for request_id, _, tried in wait_for_rows(cluster, 3)}
    assert logged["open-0"] == ["dead", "alive"]
    assert logged["open-1"] == ["dead", "alive"]
    assert logged["after"] == ["alive"]  # the second instance skipped the dead target at once
