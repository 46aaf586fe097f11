"""Quotas and rate limits, in-process: requests, tokens, concurrency, the 429 answers, the admin."""

import json
import re
import time

import pytest
from django.core.cache import cache
from django.utils import timezone
from django_ratelimit import core as ratelimit

from proxy import quotas, token_quota
from routes_admin.models import KeyUsage, RequestLog
from tests.factories import auth, make_key, make_plan, make_route
from tests.upstream import json_reply, sse_reply

pytestmark = pytest.mark.django_db

USAGE_60 = {"id": "x", "usage": {"prompt_tokens": 20, "completion_tokens": 40, "total_tokens": 60}}


def window_left(key_id: int, seconds: int = 60) -> float:
    """Seconds until the key's current django-ratelimit window ends (each key has its own offset)."""
    return ratelimit._get_window(f"k{key_id}", seconds) - time.time()


def key_with_time_left(routes, minimum: float = 15, **fields):
    """A key whose per-minute window has at least `minimum` seconds left, so a test never straddles two."""
    while True:
        key, secret = make_key(routes=routes, **fields)
        if window_left(key.id) >= minimum:
            return key, secret
        key.delete()


def call(client, secret, path="/v1/chat/completions"):
    return client.post(path, b'{"model": "m"}', content_type="application/json", **auth(secret))


def body(response) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else response.content


def parse_list(header: str) -> dict:
    """A structured-field list of named members: {'requests_per_minute': {'q': 5, 'w': 60}, ...}."""
    members = {}
    for member in header.split(", "):
        name, *params = member.split(";")
        assert re.fullmatch(r'"[a-z_]+"', name), member
        members[name.strip('"')] = {
            k: (v.strip('"') if v.startswith('"') else int(v)) for k, v in (p.split("=") for p in params)
        }
    return members


def test_requests_per_minute_answers_429_with_the_limit_retry_after_and_ratelimit_headers(client, upstream):
    route = make_route(upstream.url)
    _, secret = key_with_time_left([route], quota_plan=make_plan(requests_per_minute=5))

    remaining = []
    for _ in range(5):
        response = call(client, secret)
        assert response.status_code == 200
        body(response)
        assert parse_list(response["RateLimit-Policy"]) == {"requests_per_minute": {"q": 5, "w": 60}}
        state = parse_list(response["RateLimit"])["requests_per_minute"]
        assert 0 < state["t"] <= 60
        remaining.append(state["r"])
    assert remaining == [4, 3, 2, 1, 0]

    refused = call(client, secret)
    assert refused.status_code == 429
    error = json.loads(refused.content)["error"]
    assert error["type"] == "rate_limit_exceeded"
    assert "5 requests per minute" in error["message"]
    assert error["request_id"] == refused["X-Request-ID"]
    assert 1 <= int(refused["Retry-After"]) <= 60
    assert parse_list(refused["RateLimit-Policy"]) == {"requests_per_minute": {"q": 5, "w": 60}}
    assert parse_list(refused["RateLimit"])["requests_per_minute"]["r"] == 0
    assert len(upstream.requests) == 5  # the refused call never reached the upstream

    rows = list(RequestLog.objects.order_by("id").values_list("status", "limit", "error_type"))
    assert rows == [(200, "", "")] * 5 + [(429, "requests_per_minute", "rate_limit_exceeded")]


def test_key_override_beats_its_plan(client, upstream):
    route = make_route(upstream.url)
    _, secret = key_with_time_left([route], quota_plan=make_plan(requests_per_minute=100), requests_per_minute=2)
    assert [call(client, secret).status_code for _ in range(3)] == [200, 200, 429]


def test_key_without_limits_gets_no_ratelimit_headers(client, upstream):
    route = make_route(upstream.url)
    _, secret = make_key(routes=[route], quota_plan=make_plan(name="unlimited"))
    response = call(client, secret)
    assert response.status_code == 200
    assert "RateLimit" not in response and "RateLimit-Policy" not in response


def test_route_cap_applies_to_every_key_on_the_route(client, upstream):
    capped = make_route(upstream.url, name="capped", path_prefix="/v1", quota_plan=make_plan(requests_per_minute=2))
    free = make_route(upstream.url, name="free", path_prefix="/v2")
    routes = [capped, free]
    # Both keys need time left in their own window and in their window on the capped route.
    keys = []
    while len(keys) < 2:
        key, secret = key_with_time_left(routes)
        if ratelimit._get_window(f"k{key.id}:r{capped.id}", 60) - time.time() >= 15:
            keys.append(secret)
    for secret in keys:
        statuses = [call(client, secret).status_code for _ in range(3)]
        assert statuses == [200, 200, 429]
    refused = call(client, keys[0])
    assert "cap of 2 requests per minute on route capped" in json.loads(refused.content)["error"]["message"]
    assert "route_requests_per_minute" in parse_list(refused["RateLimit-Policy"])
    assert RequestLog.objects.filter(status=429, limit="route_requests_per_minute").count() == 3
    assert call(client, keys[0], path="/v2/chat/completions").status_code == 200  # other routes are not capped


def test_minute_refusals_do_not_eat_the_hour_quota(client, upstream):
    route = make_route(upstream.url)
    key, secret = key_with_time_left([route], quota_plan=make_plan(requests_per_minute=2, requests_per_hour=10))
    assert [call(client, secret).status_code for _ in range(5)] == [200, 200, 429, 429, 429]
    hour = ratelimit.get_usage(None, group=quotas.RATE_GROUP, key=lambda *_: f"k{key.id}", rate="10/h")
    assert hour["count"] == 2


def test_token_quota_refuses_once_the_day_is_used_up(client, upstream):
    upstream.reply = json_reply(USAGE_60)
    route = make_route(upstream.url)
    key, secret = make_key(routes=[route], quota_plan=make_plan(tokens_per_day=100))

    first = call(client, secret)
    body(first)
    assert parse_list(first["RateLimit-Policy"])["tokens_per_day"]["q"] == 100
    assert parse_list(first["RateLimit"])["tokens_per_day"]["r"] == 100  # what remained when it was admitted
    second = call(client, secret)
    body(second)
    assert parse_list(second["RateLimit"])["tokens_per_day"]["r"] == 40
    refused = call(client, secret)
    assert refused.status_code == 429
    assert "100 tokens per day" in json.loads(refused.content)["error"]["message"]
    period = token_quota.periods(timezone.now())["tokens_per_day"]
    assert abs(int(refused["Retry-After"]) - period.seconds_left(timezone.now())) <= 2
    assert RequestLog.objects.get(status=429).limit == "tokens_per_day"
    assert cache.get(token_quota.counter_key(f"k{key.id}", period)) == 120
    assert KeyUsage.objects.get(api_key=key).total_tokens == 120


def test_streamed_tokens_count_too(client, upstream):
    upstream.reply = sse_reply([{"choices": []}, {"choices": [], **USAGE_60}, "[DONE]"])
    route = make_route(upstream.url)
    _, secret = make_key(routes=[route], quota_plan=make_plan(tokens_per_month=50))
    stream = call(client, secret)
    assert b"[DONE]" in body(stream)
    refused = call(client, secret)
    assert refused.status_code == 429
    assert json.loads(refused.content)["error"]["type"] == "rate_limit_exceeded"
    assert RequestLog.objects.get(status=429).limit == "tokens_per_month"


def test_token_over_admission_is_at_most_the_calls_already_in_flight(client, upstream):
    """Tokens are known only when a call ends: calls admitted before the limit was reached finish
    and count (the overshoot), but no call that starts after it is admitted."""
    upstream.reply = sse_reply([{"choices": [], **USAGE_60}, "[DONE]"])
    route = make_route(upstream.url)
    key, secret = make_key(routes=[route], quota_plan=make_plan(tokens_per_day=100))
    in_flight = [call(client, secret) for _ in range(3)]  # admitted at 0 used, none finished yet
    assert [r.status_code for r in in_flight] == [200, 200, 200]

    period = token_quota.periods(timezone.now())["tokens_per_day"]
    counter = token_quota.counter_key(f"k{key.id}", period)

    body(in_flight.pop(0))  # 60 used: under the limit, so one more call is admitted
    late = call(client, secret)
    assert late.status_code == 200
    in_flight.append(late)
    body(in_flight.pop(0))  # 120 used: the limit is reached with two calls still in flight
    assert cache.get(counter) == 120
    assert len(in_flight) == 2

    refused = call(client, secret)
    assert refused.status_code == 429
    for response in in_flight:
        body(response)
    # The overshoot is exactly the tokens of the calls in flight when the limit was reached.
    assert cache.get(counter) == 120 + 2 * 60
    assert len(upstream.requests) == 4
    assert call(client, secret).status_code == 429
