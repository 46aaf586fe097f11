"""Quotas and rate limits, in-process: requests, tokens, concurrency, the 429 answers, the admin."""

import json
import re
import time
from datetime import timedelta

import pytest
from django.core.cache import cache
from django.utils import timezone
from django_ratelimit import core as ratelimit

from proxy import quotas, slots, token_quota
from routes_admin.models import KeyUsage, RequestLog
from tests.factories import MINUTE_LEFT, auth, make_key, make_plan, make_route, window_left
from tests.upstream import json_reply, sse_reply

pytestmark = pytest.mark.django_db

USAGE_60 = {"id": "x", "usage": {"prompt_tokens": 20, "completion_tokens": 40, "total_tokens": 60}}


def call(client, secret, path="/v1/chat/completions"):
    return client.post(path, b'{"model": "m"}', content_type="application/json", **auth(secret))


def status(client, secret, path="/v1/chat/completions") -> int:
    """A whole call, answer read to the end (so it is finished and its tokens counted)."""
    response = call(client, secret, path)
    body(response)
    return response.status_code


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
    _, secret = make_key(routes=[route], quota_plan=make_plan(requests_per_minute=5))

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
    _, secret = make_key(routes=[route], quota_plan=make_plan(requests_per_minute=100), requests_per_minute=2)
    assert [status(client, secret) for _ in range(3)] == [200, 200, 429]


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
        key, secret = make_key(routes=routes)
        if window_left(f"k{key.id}:r{capped.id}") >= MINUTE_LEFT:
            keys.append(secret)
    for secret in keys:
        statuses = [status(client, secret) for _ in range(3)]
        assert statuses == [200, 200, 429]
    refused = call(client, keys[0])
    assert "cap of 2 requests per minute on route capped" in json.loads(refused.content)["error"]["message"]
    assert "route_requests_per_minute" in parse_list(refused["RateLimit-Policy"])
    assert RequestLog.objects.filter(status=429, limit="route_requests_per_minute").count() == 3
    assert call(client, keys[0], path="/v2/chat/completions").status_code == 200  # other routes are not capped


def test_minute_refusals_do_not_eat_the_hour_quota(client, upstream):
    route = make_route(upstream.url)
    key, secret = make_key(routes=[route], quota_plan=make_plan(requests_per_minute=2, requests_per_hour=10))
    assert [status(client, secret) for _ in range(5)] == [200, 200, 429, 429, 429]
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


def test_calls_refused_for_their_tokens_count_in_no_request_window(client, upstream):
    upstream.reply = json_reply(USAGE_60)
    route = make_route(upstream.url)
    key, secret = make_key(routes=[route], quota_plan=make_plan(tokens_per_day=100, requests_per_minute=50))
    for _ in range(2):
        body(call(client, secret))  # 120 tokens: the day is used up
    assert [status(client, secret) for _ in range(3)] == [429, 429, 429]
    minute = ratelimit.get_usage(None, group=quotas.RATE_GROUP, key=lambda *_: f"k{key.id}", rate="50/m")
    assert minute["count"] == 2


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


def test_token_quota_survives_a_cache_restart(client, upstream):
    upstream.reply = json_reply(USAGE_60)
    route = make_route(upstream.url)
    _, secret = make_key(routes=[route], quota_plan=make_plan(tokens_per_day=100))
    assert [status(client, secret) for _ in range(3)] == [200, 200, 429]
    cache.clear()  # Redis restarted or flushed: the counters are gone, KeyUsage is not
    refused = call(client, secret)
    assert refused.status_code == 429
    assert parse_list(refused["RateLimit"])["tokens_per_day"]["r"] == 0


def test_month_counter_is_seeded_from_this_months_usage_rows(client, upstream):
    route = make_route(upstream.url)
    key, secret = make_key(routes=[route], quota_plan=make_plan(tokens_per_month=1000))
    today = timezone.localdate()
    KeyUsage.objects.create(api_key=key, day=today.replace(day=1), total_tokens=600)
    last_month = today.replace(day=1) - timedelta(days=1)
    KeyUsage.objects.create(api_key=key, day=last_month, total_tokens=5000)  # another month: not counted
    response = call(client, secret)
    assert response.status_code == 200
    assert parse_list(response["RateLimit"])["tokens_per_month"]["r"] == 400
    body(response)
    usage, _ = KeyUsage.objects.get_or_create(api_key=key, day=today)  # the call above made today's row
    usage.total_tokens += 400
    usage.save()
    cache.clear()
    assert call(client, secret).status_code == 429


def test_route_cap_token_counter_is_seeded_from_the_log(client, upstream):
    upstream.reply = json_reply(USAGE_60)
    route = make_route(upstream.url, quota_plan=make_plan(tokens_per_day=100))
    _, secret = make_key(routes=[route])
    assert [status(client, secret) for _ in range(3)] == [200, 200, 429]
    cache.clear()
    refused = call(client, secret)
    assert refused.status_code == 429
    assert RequestLog.objects.filter(limit="route_tokens_per_day").count() == 2


def slots_in_use(key) -> int:
    return slots.in_use(quotas.SLOT_PREFIX + f"k{key.id}")


def test_concurrency_cap_refuses_the_call_over_it(client, upstream):
    upstream.reply = sse_reply(["a", "b", "[DONE]"])
    route = make_route(upstream.url)
    key, secret = make_key(routes=[route], quota_plan=make_plan(max_concurrent=2))
    first, second = call(client, secret), call(client, secret)  # streams not read yet: both in flight
    assert parse_list(second["RateLimit"])["max_concurrent"] == {"r": 0}
    assert parse_list(second["RateLimit-Policy"])["max_concurrent"] == {"q": 2, "qu": "concurrent-requests"}
    assert slots_in_use(key) == 2
    refused = call(client, secret)
    assert refused.status_code == 429
    assert refused["Retry-After"] == "1"
    assert "2 calls in flight" in json.loads(refused.content)["error"]["message"]
    assert slots_in_use(key) == 2  # the refused call gave its slot back
    body(first)
    assert slots_in_use(key) == 1
    assert call(client, secret).status_code == 200
    body(second)
    assert RequestLog.objects.get(status=429).limit == "max_concurrent"


def test_slot_is_released_after_success(client, upstream):
    route = make_route(upstream.url)
    key, secret = make_key(routes=[route], max_concurrent=1)
    for _ in range(3):
        response = call(client, secret)
        assert response.status_code == 200
        body(response)
    assert slots_in_use(key) == 0


def test_slot_is_released_after_an_upstream_error(client):
    from tests.servers import free_port

    route = make_route(f"http://127.0.0.1:{free_port()}", max_attempts=1)  # nothing listens there
    key, secret = make_key(routes=[route], max_concurrent=1)
    for _ in range(2):
        response = call(client, secret)
        assert response.status_code == 502
        assert json.loads(response.content)["error"]["type"] == "upstream_unavailable"
    assert slots_in_use(key) == 0


def test_slot_is_released_after_a_timeout(client, upstream):
    def slow(handler):
        time.sleep(1)
        handler.send_json(200, {"late": True})

    upstream.reply = slow
    route = make_route(upstream.url, read_timeout=0.2, max_attempts=1)
    key, secret = make_key(routes=[route], max_concurrent=1)
    for _ in range(2):
        assert call(client, secret).status_code == 504
    assert slots_in_use(key) == 0


# Closing the answer fires request_finished, which closes the database connection: no test transaction here.
@pytest.mark.django_db(transaction=True)
def test_slot_is_released_when_the_client_disconnects_mid_stream(client, upstream):
    upstream.reply = sse_reply([{"n": n} for n in range(50)], interval=0.02)
    route = make_route(upstream.url)
    key, secret = make_key(routes=[route], max_concurrent=1)
    response = call(client, secret)
    assert next(iter(response.streaming_content)).startswith(b"data:")
    assert slots_in_use(key) == 1
    response.close()  # what the WSGI server does when the client goes away
    assert slots_in_use(key) == 0
    assert RequestLog.objects.get().error_type == "client_disconnected"
    again = call(client, secret)
    assert again.status_code == 200
    again.close()


def test_admin_shows_todays_and_this_months_use_against_the_limits(admin_client, client, upstream):
    upstream.reply = json_reply(USAGE_60)
    route = make_route(upstream.url)
    key, secret = make_key(routes=[route], quota_plan=make_plan(name="free", tokens_per_day=50_000))
    for _ in range(2):
        body(call(client, secret))
    listing = admin_client.get("/admin/routes_admin/apikey/").content.decode()
    assert "120 of 50,000 (0%)" in listing
    page = admin_client.get(f"/admin/routes_admin/apikey/{key.pk}/change/").content.decode()
    assert "Tokens this month" in page and "120 (no limit)" in page
    assert "2 (no limit)" in page  # calls today
    assert "Now: tokens per day" in page and "120 of 50,000 (0%), resets in" in page  # the live counter
    assert admin_client.get("/admin/routes_admin/keyusage/").status_code == 200
    assert admin_client.get("/admin/routes_admin/quotaplan/").status_code == 200


def test_admin_reset_action_lets_a_refused_key_call_again(admin_client, client, upstream):
    upstream.reply = json_reply(USAGE_60)
    route = make_route(upstream.url, quota_plan=make_plan(name="route cap", requests_per_day=50))
    key, secret = make_key(routes=[route], quota_plan=make_plan(requests_per_minute=2, tokens_per_day=1000))
    assert [status(client, secret) for _ in range(3)] == [200, 200, 429]

    response = admin_client.post(
        "/admin/routes_admin/apikey/", {"action": "reset_quota_counters", "_selected_action": [key.pk]}, follow=True
    )
    assert "Reset the counters of 1 key(s)" in response.content.decode()
    assert not KeyUsage.objects.filter(api_key=key).exists()
    again = call(client, secret)
    assert again.status_code == 200
    assert parse_list(again["RateLimit"])["requests_per_minute"]["r"] == 1
    assert parse_list(again["RateLimit"])["tokens_per_day"]["r"] == 1000
    assert parse_list(again["RateLimit"])["route_requests_per_day"]["r"] == 49
    body(again)
    page = admin_client.get(f"/admin/routes_admin/apikey/{key.pk}/change/").content.decode()
    assert "Now: requests per minute" in page and "1 of 2 (50%), resets in" in page


def test_route_concurrency_cap_counts_each_key_on_the_route(client, upstream):
    upstream.reply = sse_reply(["a", "[DONE]"])
    route = make_route(upstream.url, name="busy", quota_plan=make_plan(max_concurrent=1))
    _, first_secret = make_key(routes=[route])
    _, second_secret = make_key(routes=[route])
    held = call(client, first_secret)
    refused = call(client, first_secret)
    assert refused.status_code == 429
    message = json.loads(refused.content)["error"]["message"]
    assert message == (
        "This API key already has 1 calls in flight on route busy, the route's cap (max_concurrent); "
        "retry when one finishes."
    )
    other = call(client, second_secret)  # another key has a slot of its own on the route
    assert other.status_code == 200
    body(other), body(held)
    assert RequestLog.objects.get(status=429).limit == "route_max_concurrent"
