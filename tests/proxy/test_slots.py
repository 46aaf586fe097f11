"""Concurrency slots heal: a slot never released frees itself GATEWAY_INFLIGHT_TTL after its call
started, refused retries do not extend it, and a cache flushed mid-call recovers exact counts."""

import time

import pytest
from django.core.cache import cache

from proxy import quotas, slots
from tests.factories import auth, make_key, make_plan, make_route
from tests.private_redis import PrivateRedis
from tests.upstream import sse_reply

pytestmark = pytest.mark.django_db


def call(client, secret):
    return client.post("/v1/chat/completions", b'{"model": "m"}', content_type="application/json", **auth(secret))


def body(response) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else response.content


def in_use(key) -> int:
    return slots.in_use(quotas.SLOT_PREFIX + f"k{key.id}")


def test_a_slot_never_released_heals_after_the_ttl_even_while_refused_calls_retry(client, upstream, settings):
    settings.GATEWAY_INFLIGHT_TTL = 0.5
    upstream.reply = sse_reply(["a", "[DONE]"])
    route = make_route(upstream.url)
    key, secret = make_key(routes=[route], quota_plan=make_plan(max_concurrent=1))
    leaked = call(client, secret)  # its stream is never read nor closed: the call never ends
    assert leaked.status_code == 200
    statuses = []
    deadline = time.monotonic() + 5  # ten times the TTL: a bound, not a measurement
    while time.monotonic() < deadline:
        response = call(client, secret)  # the client retrying as fast as it can
        statuses.append(response.status_code)
        if response.status_code == 200:
            body(response)
            break
        time.sleep(0.05)
    assert statuses[0] == 429
    assert statuses[-1] == 200, "the leaked slot never healed"


def test_refused_takes_do_not_extend_a_leaked_slot(settings, monkeypatch):
    settings.GATEWAY_INFLIGHT_TTL = 60
    now = [1_000_000.0]
    monkeypatch.setattr(slots, "clock", lambda: now[0])
    key = quotas.SLOT_PREFIX + "leak-test"
    token, in_flight = slots.take(key, 2)
    assert token and in_flight == 1  # this call's process dies: never released
    assert slots.take(key, 2)[0] is not None  # a second call, also never released
    for offset in (1, 30, 59.9):
        now[0] = 1_000_000.0 + offset
        assert slots.take(key, 2) == (None, 2)
    now[0] = 1_000_000.0 + 60.1  # both slots are a TTL old: free, however often they were asked for
    assert slots.in_use(key) == 0
    token, in_flight = slots.take(key, 2)
    assert token and in_flight == 1
    slots.release(key, token)
    assert slots.in_use(key) == 0


def test_counts_recover_after_the_cache_is_flushed_mid_call(client, upstream):
    upstream.reply = sse_reply(["a", "[DONE]"])
    route = make_route(upstream.url)
    key, secret = make_key(routes=[route], quota_plan=make_plan(max_concurrent=1))
    first = call(client, secret)
    assert first.status_code == 200
    cache.clear()  # Redis restarted or flushed while the first call runs
    second = call(client, secret)
    assert second.status_code == 200  # the first call's slot is gone with the flush
    body(first)  # the first call ends: its release must not free the second call's slot
    assert call(client, secret).status_code == 429
    assert in_use(key) == 1
    body(second)
    assert in_use(key) == 0
    third = call(client, secret)
    assert third.status_code == 200
    body(third)


@pytest.fixture
def persistent_redis(settings, tmp_path):
    """A Redis of the test's own that keeps its data on disk (append-only file) across a restart."""
    server = PrivateRedis(tmp_path, persistent=True)
    settings.CACHES = {
        "default": {
            "BACKEND": "gateway_project.cache.SharedRedisCache",
            "LOCATION": server.url,
            "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5},
        }
    }
    yield server.start, server.stop
    server.stop()


def test_a_slot_whose_release_was_lost_in_a_redis_restart_heals(client, upstream, settings, persistent_redis):
    start, stop = persistent_redis
    settings.GATEWAY_INFLIGHT_TTL = 3  # longer than the restart takes
    upstream.reply = sse_reply(["a", "[DONE]"])
    route = make_route(upstream.url)
    key, secret = make_key(routes=[route], quota_plan=make_plan(max_concurrent=1))
    running = call(client, secret)
    assert running.status_code == 200
    stop()
    body(running)  # the call ends while Redis is down: its release is lost
    start()  # Redis comes back with the slot it had on disk
    statuses = []
    deadline = time.monotonic() + 15  # five times the TTL: a bound, not a measurement
    while time.monotonic() < deadline:
        response = call(client, secret)
        statuses.append(response.status_code)
        body(response)
        if response.status_code == 200:
            break
        time.sleep(0.05)
    assert statuses[0] == 429  # the slot came back with Redis
    assert statuses[-1] == 200, "the slot taken before the restart never healed"
