"""Fallback routes: when every target of a route failed, the call goes to its fallback route."""

import json

import pytest
from django.test import override_settings

from routes_admin.models import RequestLog
from tests.factories import auth, make_key, make_route, make_target
from tests.upstream import json_reply, refused_url, slow

pytestmark = pytest.mark.django_db
BUSY = json_reply({"error": "busy"}, status=503)
BODY = json.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]})


def post(client, secret):
    response = client.post("/v1/chat/completions", BODY, content_type="application/json", **auth(secret))
    content = b"".join(response.streaming_content) if response.streaming else response.content
    return response, content


def primary_with_fallback(servers, primary_reply, **primary_fields):
    """`big` on /v1 (two targets) falls back to `small`, a route clients cannot reach directly."""
    small_server = servers(json_reply({"answer": "from small"}))
    small = make_route(name="small", path_prefix="/internal/small", methods="POST")
    make_target(small, small_server.url + "/v1", name="small-1", model_aliases={"gpt-4o": "llama-3.1-8b-instruct"})
    big = make_route(name="big", path_prefix="/v1", fallback=small, strategy="failover", **primary_fields)
    big_servers = [servers(primary_reply), servers(primary_reply)]
    for position, server in enumerate(big_servers):
        make_target(big, server.url, name=f"big-{position + 1}", position=position)
    _, secret = make_key(routes=[big])
    return big_servers, small_server, secret


def test_call_falls_back_when_every_target_failed_and_the_answer_says_so(client, servers):
    big_servers, small_server, secret = primary_with_fallback(servers, BUSY, retry_non_idempotent=True)

    response, content = post(client, secret)

    assert response.status_code == 200
    assert json.loads(content) == {"answer": "from small"}
    assert response["X-Gateway-Fallback"] == "small"
    # The rest of the path after the original route's prefix, and the fallback target's own model name.
    assert small_server.last.path == "/v1/chat/completions"
    assert small_server.last.json()["model"] == "llama-3.1-8b-instruct"
    row = RequestLog.objects.get()
    assert (row.route_name, row.fallback_from, row.target) == ("small", "big", "small-1")
    assert row.targets_tried == ["big-1", "big-2", "small-1"]
    assert row.attempts == 3
    assert [len(s.requests) for s in big_servers] == [1, 1]


def test_no_fallback_while_the_route_answers(client, servers):
    _, small_server, secret = primary_with_fallback(servers, json_reply({"answer": "from big"}))

    response, content = post(client, secret)

    assert json.loads(content) == {"answer": "from big"}
    assert not response.has_header("X-Gateway-Fallback")
    assert small_server.requests == []
    assert RequestLog.objects.get().fallback_from == ""


def test_post_that_may_have_reached_the_upstream_does_not_fall_back_unless_allowed(client, servers):
    _, small_server, secret = primary_with_fallback(servers, slow(1.0), read_timeout=0.3)

    response, content = post(client, secret)

    assert response.status_code == 504  # resending the completion could run it twice
    assert small_server.requests == []
    assert RequestLog.objects.get().fallback_from == ""


def test_unreachable_targets_fall_back_for_any_method(client, servers):
    small_server = servers(json_reply({"answer": "from small"}))
    small = make_route(name="small", path_prefix="/v1", model_names="never-asked-for")
    make_target(small, small_server.url, name="small-1")
    big = make_route(name="big", path_prefix="/v1", fallback=small, retry_non_idempotent=False)
    make_target(big, refused_url(), name="big-1")
    _, secret = make_key(routes=[big])

    response, content = post(client, secret)

    assert response.status_code == 200
    assert response["X-Gateway-Fallback"] == "small"
    assert small_server.last.path == "/chat/completions"


@override_settings(GATEWAY_BREAKER_FAILURES=1, GATEWAY_BREAKER_COOLDOWN=30)
def test_route_whose_breakers_are_all_open_goes_straight_to_its_fallback(client, servers):
    big_servers, small_server, secret = primary_with_fallback(servers, BUSY, retry_non_idempotent=True)
    post(client, secret)  # both big targets fail once: their breakers open

    response, _ = post(client, secret)

    assert response.status_code == 200
    assert response["X-Gateway-Fallback"] == "small"
    assert [len(s.requests) for s in big_servers] == [1, 1]  # not tried again
    assert RequestLog.objects.latest("id").targets_tried == ["small-1"]


def test_when_the_fallback_fails_too_the_client_gets_its_last_answer(client, servers):
    small_server = servers(json_reply({"error": "small busy"}, status=503))
    small = make_route(name="small", path_prefix="/internal/small")
    make_target(small, small_server.url, name="small-1")
    big = make_route(name="big", path_prefix="/v1", fallback=small, retry_non_idempotent=True)
    make_target(big, servers(BUSY).url, name="big-1")
    _, secret = make_key(routes=[big])

    response, content = post(client, secret)

    assert response.status_code == 503
    assert json.loads(content) == {"error": "small busy"}
    assert response["X-Gateway-Fallback"] == "small"
    assert RequestLog.objects.get().targets_tried == ["big-1", "small-1"]


def test_fallback_routes_that_point_at_each_other_end(client, servers):
    a = make_route(name="a", path_prefix="/v1", retry_non_idempotent=True)
    b = make_route(name="b", path_prefix="/internal/b", fallback=a, retry_non_idempotent=True)
    a.fallback = b
    a.save()
    make_target(a, servers(BUSY).url, name="a-1")
    make_target(b, servers(BUSY).url, name="b-1")
    _, secret = make_key(routes=[a])

    response, _ = post(client, secret)

    assert response.status_code == 503
    assert RequestLog.objects.get().targets_tried == ["a-1", "b-1"]


def test_gateway_error_after_a_fallback_also_names_the_fallback_route(client, servers):
    small = make_route(name="small", path_prefix="/internal/small")
    make_target(small, refused_url(), name="small-1")
    big = make_route(name="big", path_prefix="/v1", fallback=small, retry_non_idempotent=True)
    make_target(big, servers(BUSY).url, name="big-1")
    _, secret = make_key(routes=[big])

    response, content = post(client, secret)

    assert response.status_code == 502
    assert json.loads(content)["error"]["type"] == "upstream_unavailable"
    assert response["X-Gateway-Fallback"] == "small"
    row = RequestLog.objects.get()
    assert (row.route_name, row.fallback_from, row.targets_tried) == ("small", "big", ["big-1", "small-1"])
