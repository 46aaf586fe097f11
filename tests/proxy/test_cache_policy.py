"""Only an unreachable cache takes the GATEWAY_CACHE_FAILURE path; a bug in the quota or breaker
code propagates (500 JSON, logged, with its log row) instead of lifting every limit."""

import json
import logging
import time

import pytest

from proxy import attempts, breaker, token_quota
from routes_admin.models import RequestLog
from tests.factories import auth, make_key, make_plan, make_route
from tests.servers import free_port

pytestmark = pytest.mark.django_db


@pytest.fixture
def unreachable_cache(settings):
    """The production Redis backend pointed at a port where nothing listens."""
    settings.CACHES = {
        "default": {
            "BACKEND": "gateway_project.cache.SharedRedisCache",
            "LOCATION": f"redis://127.0.0.1:{free_port()}/0",
            "OPTIONS": {"socket_connect_timeout": 0.2, "socket_timeout": 0.2},
        }
    }


def call(client, secret):
    response = client.post("/v1/chat/completions", b'{"model": "m"}', content_type="application/json", **auth(secret))
    if response.streaming:
        b"".join(response.streaming_content)
    return response


def test_a_bug_in_the_quota_code_is_a_500_not_a_call_without_quotas(client, upstream, monkeypatch, caplog):
    route = make_route(upstream.url)
    _, secret = make_key(routes=[route], quota_plan=make_plan(tokens_per_day=100))

    def broken(now):
        raise TypeError("a bug in the token periods")

    monkeypatch.setattr(token_quota, "periods", broken)
    with caplog.at_level(logging.ERROR, logger="gateway.errors"):
        response = call(client, secret)

    assert response.status_code == 500
    error = json.loads(response.content)["error"]
    assert error["type"] == "internal_error"
    assert error["request_id"] == response["X-Request-ID"]
    assert upstream.requests == []  # not served without its quota
    assert RequestLog.objects.get().status == 500
    assert any(r.exc_info and isinstance(r.exc_info[1], TypeError) for r in caplog.records)


def test_an_unreachable_cache_still_serves_without_quotas(client, upstream, unreachable_cache, settings):
    settings.GATEWAY_CACHE_FAILURE = "open"
    route = make_route(upstream.url)
    _, secret = make_key(routes=[route], quota_plan=make_plan(tokens_per_day=100, max_concurrent=2))
    assert call(client, secret).status_code == 200


def test_no_call_probes_while_the_cache_is_unreachable(unreachable_cache):
    route_row = make_route("http://127.0.0.1:9/v1")
    from proxy import config

    route = config.current().routes_by_id[route_row.id]
    target = route.targets[0]
    past = time.time() - 60
    # The state was read (with the token counters) just before the cache went away: cooled down.
    read_ahead = {breaker.keys([target.id])[0]: {"opened": past, "until": past + 1}}

    assert breaker.claim_probe(target.id, hold=5) is None
    candidates = list(attempts._candidates(route, 5, read_ahead, []))
    assert candidates == [(target, False)]  # an ordinary attempt: nothing to record a probe in


def test_a_bug_in_the_breaker_propagates(settings, monkeypatch):
    settings.GATEWAY_BREAKER_FAILURES = 1

    def broken(target_id, now):
        raise TypeError("a bug while opening the breaker")

    monkeypatch.setattr(breaker, "_open", broken)
    with pytest.raises(TypeError):
        breaker.record_failure(1, "t", probe=False)


def test_a_bug_while_adding_tokens_is_logged_with_its_traceback(client, upstream, monkeypatch, caplog):
    upstream.reply = lambda handler: handler.send_json(200, {"usage": {"total_tokens": 7}})
    route = make_route(upstream.url)
    _, secret = make_key(routes=[route], quota_plan=make_plan(tokens_per_day=100))

    def broken(*args):
        raise TypeError("a bug while adding tokens")

    monkeypatch.setattr(token_quota, "add", broken)
    with caplog.at_level(logging.WARNING):
        assert call(client, secret).status_code == 200  # the answer was already on its way
    assert any(r.exc_info and isinstance(r.exc_info[1], TypeError) for r in caplog.records)
    assert RequestLog.objects.get().status == 200
