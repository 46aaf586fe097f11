"""Retries: before the first byte reaches the client, on the next target, within the route's rules."""

import json
import time

import pytest
from django.test import override_settings

from routes_admin.models import RequestLog
from tests.factories import auth, make_key, make_route, make_target
from tests.upstream import json_reply, refused_url, slow

pytestmark = pytest.mark.django_db
BODY = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]})


def post(client, secret, body=BODY, path="/v1/chat/completions"):
    response = client.post(path, body, content_type="application/json", **auth(secret))
    content = b"".join(response.streaming_content) if response.streaming else response.content
    return response, content


def only_log() -> RequestLog:
    rows = list(RequestLog.objects.all())
    assert len(rows) == 1
    return rows[0]


def test_refusing_slow_and_overloaded_targets_are_skipped_for_the_healthy_one(client, servers):
    slow_server = servers(slow(1.0))
    overloaded = servers(json_reply({"error": "busy"}, status=503))
    healthy = servers(json_reply({"answer": "from healthy"}))
    route = make_route(strategy="failover", max_attempts=4, read_timeout=0.3, retry_non_idempotent=True)
    make_target(route, refused_url(), name="refusing", position=0)
    make_target(route, slow_server.url, name="slow", position=1)
    make_target(route, overloaded.url, name="overloaded", position=2)
    make_target(route, healthy.url, name="healthy", position=3)
    _, secret = make_key(routes=[route])

    response, content = post(client, secret)

    assert response.status_code == 200
    assert json.loads(content) == {"answer": "from healthy"}
    row = only_log()
    assert row.status == 200
    assert row.attempts == 4
    assert row.targets_tried == ["refusing", "slow", "overloaded", "healthy"]
    assert row.target == "healthy"
    assert len(slow_server.requests) == len(overloaded.requests) == len(healthy.requests) == 1


def test_post_is_not_retried_after_a_timeout_unless_the_route_allows_it(client, servers):
    slow_server = servers(slow(1.0))
    healthy = servers()
    route = make_route(strategy="failover", read_timeout=0.3, retry_non_idempotent=False)
    make_target(route, slow_server.url, name="slow", position=0)
    make_target(route, healthy.url, name="healthy", position=1)
    _, secret = make_key(routes=[route])

    response, content = post(client, secret)

    assert response.status_code == 504
    assert json.loads(content)["error"]["type"] == "upstream_timeout"
    assert healthy.requests == []  # the slow upstream may be generating the answer: never sent twice
    row = only_log()
    assert (row.status, row.attempts, row.targets_tried) == (504, 1, ["slow"])


def test_get_is_retried_after_a_timeout(client, servers):
    slow_server = servers(slow(1.0))
    healthy = servers(json_reply({"models": []}))
    route = make_route(strategy="failover", read_timeout=0.3, retry_non_idempotent=False)
    make_target(route, slow_server.url, name="slow", position=0)
    make_target(route, healthy.url, name="healthy", position=1)
    _, secret = make_key(routes=[route])

    response = client.get("/v1/models", **auth(secret))

    assert response.status_code == 200
    assert b"".join(response.streaming_content) == b'{"models": []}'
    assert only_log().targets_tried == ["slow", "healthy"]


def test_refused_connection_is_retried_even_for_a_post_the_route_would_not_retry(client, servers):
    healthy = servers(json_reply({"ok": True}))
    route = make_route(strategy="failover", retry_non_idempotent=False)
    make_target(route, refused_url(), name="down", position=0)
    make_target(route, healthy.url, name="up", position=1)
    _, secret = make_key(routes=[route])

    response, _ = post(client, secret)

    assert response.status_code == 200
    assert json.loads(healthy.last.body)["model"] == "m"
    assert only_log().targets_tried == ["down", "up"]


def test_post_answered_503_is_not_retried_unless_the_route_allows_it(client, servers):
    overloaded = servers(json_reply({"error": "busy"}, status=503))
    healthy = servers()
    route = make_route(strategy="failover", retry_non_idempotent=False)
    make_target(route, overloaded.url, name="busy", position=0)
    make_target(route, healthy.url, name="ok", position=1)
    _, secret = make_key(routes=[route])

    response, content = post(client, secret)

    assert response.status_code == 503
    assert json.loads(content) == {"error": "busy"}  # the upstream's own answer
    assert healthy.requests == []

    route.retry_non_idempotent = True
    route.save()
    response, _ = post(client, secret)
    assert response.status_code == 200
    assert len(healthy.requests) == 1


def test_when_every_attempt_fails_the_client_gets_the_last_upstream_answer(client, servers):
    first = servers(json_reply({"error": "first busy"}, status=503))
    second = servers(json_reply({"error": "second busy"}, status=502, headers={"X-Upstream": "second"}))
    third = servers()
    route = make_route(strategy="failover", max_attempts=2, retry_non_idempotent=True)
    make_target(route, first.url, name="first", position=0)
    make_target(route, second.url, name="second", position=1)
    make_target(route, third.url, name="third", position=2)
    _, secret = make_key(routes=[route])

    response, content = post(client, secret)

    assert response.status_code == 502
    assert json.loads(content) == {"error": "second busy"}
    assert response["X-Upstream"] == "second"
    assert third.requests == []  # max_attempts is 2
    row = only_log()
    assert (row.status, row.attempts, row.targets_tried, row.target) == (502, 2, ["first", "second"], "second")


def test_when_every_target_is_unreachable_the_client_gets_a_502_json_error(client):
    route = make_route(strategy="failover", retry_non_idempotent=True)
    make_target(route, refused_url(), name="a", position=0)
    make_target(route, refused_url(), name="b", position=1)
    _, secret = make_key(routes=[route])

    response, content = post(client, secret)

    assert response.status_code == 502
    error = json.loads(content)["error"]
    assert error["type"] == "upstream_unavailable"
    assert error["request_id"] == response["X-Request-ID"]
    assert only_log().targets_tried == ["a", "b"]


def test_status_outside_the_retry_list_goes_straight_to_the_client(client, servers):
    broken = servers(json_reply({"error": "bug"}, status=500))
    healthy = servers()
    route = make_route(strategy="failover", retry_non_idempotent=True)  # default list: 429,502,503,504
    make_target(route, broken.url, name="broken", position=0)
    make_target(route, healthy.url, name="ok", position=1)
    _, secret = make_key(routes=[route])

    response, _ = post(client, secret)

    assert response.status_code == 500
    assert healthy.requests == []
    assert only_log().attempts == 1


@pytest.mark.slow  # waits out the upstream's real Retry-After: 1
def test_short_retry_after_is_waited_out_then_the_next_target_is_tried(client, servers):
    limited = servers(json_reply({"error": "slow down"}, status=429, headers={"Retry-After": "1"}))
    healthy = servers()
    route = make_route(strategy="failover", retry_non_idempotent=True)
    make_target(route, limited.url, name="limited", position=0)
    make_target(route, healthy.url, name="ok", position=1)
    _, secret = make_key(routes=[route])

    started = time.monotonic()
    response, _ = post(client, secret)

    assert response.status_code == 200
    assert time.monotonic() - started >= 0.95  # the upstream asked for a second
    assert only_log().targets_tried == ["limited", "ok"]


def test_long_retry_after_is_passed_to_the_client_without_retrying(client, servers):
    limited = servers(json_reply({"error": "quota"}, status=429, headers={"Retry-After": "60"}))
    healthy = servers()
    route = make_route(strategy="failover", retry_non_idempotent=True)
    make_target(route, limited.url, name="limited", position=0)
    make_target(route, healthy.url, name="ok", position=1)
    _, secret = make_key(routes=[route])

    response, _ = post(client, secret)

    assert response.status_code == 429
    assert response["Retry-After"] == "60"
    assert healthy.requests == []


def test_a_stream_that_breaks_mid_way_is_not_retried_and_ends_with_an_error_event(client, servers):
    def breaks_off(handler):
        handler.start_chunked()
        handler.send_chunk(b'data: {"choices": [{"delta": {"content": "Hel"}}]}\n\n')
        handler.close_connection = True  # no final chunk: the answer is cut off

    breaking = servers(breaks_off)
    healthy = servers()
    route = make_route(strategy="failover", retry_non_idempotent=True)
    make_target(route, breaking.url, name="breaking", position=0)
    make_target(route, healthy.url, name="ok", position=1)
    _, secret = make_key(routes=[route])

    response, content = post(client, secret, body=json.dumps({"model": "m", "stream": True}))

    assert response.status_code == 200
    assert content.startswith(b'data: {"choices": [{"delta": {"content": "Hel"}}]}\n\n')
    assert content.endswith(b"\n\n")
    last_event = content.rstrip(b"\n").split(b"\n\n")[-1]
    assert last_event.startswith(b"event: error\ndata: ")
    assert json.loads(last_event.split(b"data: ", 1)[1])["error"]["type"] == "upstream_stream_error"
    assert healthy.requests == []
    row = only_log()
    assert (row.attempts, row.targets_tried, row.error_type) == (1, ["breaking"], "upstream_stream_error")


@override_settings(GATEWAY_EXPOSE_TARGET=True)
def test_target_name_is_sent_back_when_the_setting_enables_it(client, servers):
    healthy = servers()
    route = make_route(strategy="failover")
    make_target(route, refused_url(), name="down", position=0)
    make_target(route, healthy.url, name="replica-2", position=1)
    _, secret = make_key(routes=[route])

    response, _ = post(client, secret)

    assert response["X-Gateway-Target"] == "replica-2"


def test_target_name_is_not_sent_back_by_default(client, upstream):
    route = make_route(strategy="failover")
    make_target(route, upstream.url, name="replica-1")
    _, secret = make_key(routes=[route])

    response, _ = post(client, secret)

    assert response.status_code == 200
    assert not response.has_header("X-Gateway-Target")
