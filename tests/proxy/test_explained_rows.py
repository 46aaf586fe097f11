"""Each call's log row records why it went as it did (the console explains it)."""

import json
from datetime import timedelta

import pytest
from django.test import override_settings
from django.utils import timezone

from routes_admin.models import RequestLog
from tests.factories import auth, make_key, make_route, make_target
from tests.upstream import json_reply, refused_url, slow

pytestmark = pytest.mark.django_db
BODY = json.dumps({"model": "fast", "messages": [{"role": "user", "content": "hi"}]})


def post(client, secret="", path="/v1/chat/completions", body=BODY, **headers):
    if secret:
        headers.update(auth(secret))
    response = client.post(path, body, content_type="application/json", **headers)
    b"".join(response.streaming_content) if response.streaming else response.content
    return response, RequestLog.objects.latest("id")


def test_a_retried_call_records_each_attempt_its_outcome_and_why_the_next_was_made(client, servers):
    late, busy, fine = servers(slow(1)), servers(json_reply({}, status=503)), servers(json_reply({"ok": 1}))
    route = make_route(name="chat", strategy="failover", read_timeout=0.2, retry_non_idempotent=True)
    make_target(route, late.url, name="demo-a", position=0)
    make_target(route, busy.url, name="demo-b", position=1)
    make_target(route, fine.url, name="demo-c", position=2, model_aliases={"fast": "llama-3.1-8b"})
    _, secret = make_key(routes=[route])

    response, row = post(client, secret)

    assert response.status_code == 200
    assert (row.model, row.upstream_model) == ("fast", "llama-3.1-8b")
    assert row.detail["match"] == "route chat: prefix /v1"
    tried = row.detail["attempts"]
    assert [(a["target"], a["status"], a["error"], a["next"]) for a in tried] == [
        ("demo-a", None, "timeout", "timeout"),
        ("demo-b", 503, "", "retry_status"),
        ("demo-c", 200, "", ""),
    ]
    assert tried[0]["ms"] >= 200  # the read timeout it waited out
    assert all(a["ms"] > 0 for a in tried)


@override_settings(GATEWAY_BREAKER_FAILURES=1, GATEWAY_BREAKER_COOLDOWN=60)
def test_a_target_passed_over_for_its_open_breaker_and_a_fallback_are_recorded(client, servers):
    spare = make_route(name="spare", path_prefix="/internal/spare")
    make_target(spare, servers(json_reply({"ok": 1})).url, name="spare-1")
    route = make_route(name="chat", fallback=spare, max_attempts=1)
    make_target(route, refused_url(), name="dead")
    _, secret = make_key(routes=[route])

    _, first = post(client, secret)
    assert [(a["target"], a["error"], a["next"]) for a in first.detail["attempts"]] == [
        ("dead", "unreachable", "fallback"),
        ("spare-1", "", ""),
    ]
    _, second = post(client, secret)  # the breaker of "dead" is open now
    assert second.detail["attempts"][0] == {"target": "dead", "skipped": "breaker_open"}
    assert (second.status, second.fallback_from) == (200, "chat")


def test_a_refused_call_records_the_counter_that_refused_it(client, upstream):
    route = make_route(upstream.url, name="chat")
    _, secret = make_key(routes=[route], requests_per_minute=2)
    for _ in range(2):
        post(client, secret)
    response, row = post(client, secret)
    assert response.status_code == 429
    quota = row.detail["quota"]
    assert (quota["name"], quota["limit"], quota["used"]) == ("requests_per_minute", 2, 3)
    assert 0 < quota["reset"] <= 60
    assert "requests per minute" in row.detail["why"]


def test_refused_keys_record_why(client, upstream):
    route = make_route(upstream.url, name="chat")
    other = make_route(upstream.url, name="other", path_prefix="/v2")
    _, good = make_key(routes=[other])
    revoked_key, revoked = make_key(routes=[route], revoked=timezone.now())
    _, disabled = make_key(routes=[route], enabled=False)
    _, expired = make_key(routes=[route], expires=timezone.now() - timedelta(days=1))
    seen = {}
    for label, secret in [
        ("missing", ""),
        ("unknown", "gw_nope_" + "x" * 40),
        ("revoked", revoked),
        ("disabled", disabled),
        ("expired", expired),
        ("route_not_allowed", good),
    ]:
        response, row = post(client, secret)
        seen[label] = (response.status_code, row.detail.get("auth"))
        if label == "revoked":
            assert row.api_key_id == revoked_key.id  # its secret was right: the row says whose call it was
    assert seen == {
        "missing": (401, "missing"),
        "unknown": (401, "unknown"),
        "revoked": (401, "revoked"),
        "disabled": (401, "disabled"),
        "expired": (401, "expired"),
        "route_not_allowed": (403, "route_not_allowed"),
    }


def test_a_call_no_route_serves_records_why(client, upstream):
    make_route(upstream.url, name="chat", model_names="fast")
    _, secret = make_key(all_routes=True)
    response, row = post(client, secret, body=json.dumps({"model": "slow"}))
    assert response.status_code == 404
    assert row.model == "slow"
    assert row.detail["why"] == "No route serves the model 'slow' on this path."


def test_the_model_is_recorded_when_no_route_parses_the_body(client, upstream):
    route = make_route(upstream.url, name="chat")
    _, secret = make_key(routes=[route])
    body = json.dumps({"messages": [{"role": "user", "content": 'say "model": "x"'}], "model": "gpt-4o"})
    _, row = post(client, secret, body=body)
    assert (row.model, row.upstream_model) == ("gpt-4o", "gpt-4o")
