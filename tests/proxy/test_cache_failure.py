"""The cache (Redis) going away mid-test: GATEWAY_CACHE_FAILURE chooses fail-open or fail-closed.

Each test starts a Redis of its own on a free port, points the gateway's cache at it, and stops
it between two calls.
"""

import json
import logging

import pytest

from routes_admin.models import RequestLog
from tests.factories import auth, make_key, make_plan, make_route
from tests.private_redis import PrivateRedis

pytestmark = pytest.mark.django_db


@pytest.fixture
def own_redis(settings, tmp_path):
    server = PrivateRedis(tmp_path)  # started
    settings.CACHES = {
        "default": {
            "BACKEND": "gateway_project.cache.SharedRedisCache",  # what production runs
            "LOCATION": server.url,
            "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5},
        }
    }
    yield server
    server.stop()


def call(client, secret):
    response = client.post("/v1/chat/completions", b'{"model": "m"}', content_type="application/json", **auth(secret))
    if response.streaming:
        b"".join(response.streaming_content)
    return response


def limited_key(upstream):
    route = make_route(upstream.url)
    plan = make_plan(requests_per_minute=100, tokens_per_day=10_000, max_concurrent=5)
    return make_key(routes=[route], quota_plan=plan)


def test_fail_open_serves_the_call_and_logs_it(client, upstream, own_redis, settings, caplog):
    settings.GATEWAY_CACHE_FAILURE = "open"
    _, secret = limited_key(upstream)
    before = call(client, secret)
    assert before.status_code == 200
    assert '"requests_per_minute";r=99' in before["RateLimit"]  # the counters live in this Redis

    own_redis.stop()
    with caplog.at_level(logging.WARNING, logger="gateway.quotas"):
        during = call(client, secret)

    assert during.status_code == 200
    assert "RateLimit" not in during  # nothing is known about the limits
    assert len(upstream.requests) == 2
    warnings = [r.getMessage() for r in caplog.records if r.name == "gateway.quotas"]
    assert any("without quota checks (GATEWAY_CACHE_FAILURE=open)" in m for m in warnings), warnings
    assert list(RequestLog.objects.order_by("id").values_list("status", flat=True)) == [200, 200]


def test_fail_closed_answers_503_json_until_the_cache_is_back(client, upstream, own_redis, settings):
    settings.GATEWAY_CACHE_FAILURE = "closed"
    _, secret = limited_key(upstream)
    assert call(client, secret).status_code == 200

    own_redis.stop()
    refused = call(client, secret)
    assert refused.status_code == 503
    error = json.loads(refused.content)["error"]
    assert error["type"] == "service_unavailable"
    assert error["request_id"] == refused["X-Request-ID"]
    assert len(upstream.requests) == 1  # the upstream never heard of it
    row = RequestLog.objects.order_by("-id").first()
    assert (row.status, row.error_type) == (503, "service_unavailable")

    own_redis.start()  # back (empty, as after a restart): calls pass again
    assert call(client, secret).status_code == 200


def test_fail_closed_still_serves_keys_without_limits(client, upstream, own_redis, settings):
    settings.GATEWAY_CACHE_FAILURE = "closed"
    route = make_route(upstream.url)
    _, secret = make_key(routes=[route])
    own_redis.stop()
    assert call(client, secret).status_code == 200  # no limit to check, so nothing to refuse
