"""A call's request windows are counted in one cache operation, exactly, on every backend: in
order, stopping at the first window over its limit, with django-ratelimit's keys and expiry."""

import threading
import time
import uuid

import pytest
from django.core.cache import cache
from django_ratelimit import core as ratelimit

from proxy import request_windows


@pytest.fixture(params=["configured", "other backend"])
def backend(request, settings):
    """The configured cache (the in-process one, or Redis with REDIS_URL), then Django's stock
    LocMemCache, which has neither a script nor count_windows: the add-then-incr fallback."""
    if request.param == "other backend":
        settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    return request.param


def windows(minute_limit: int = 2, hour_limit: int = 10) -> tuple[list[tuple[str, int, int]], str]:
    name = f"w{uuid.uuid4().hex}"  # a counter of its own: test runs share the configured Redis
    return [
        (request_windows.window(name, minute_limit, "m", 60)[0], minute_limit, 60),
        (request_windows.window(name, hour_limit, "h", 3600)[0], hour_limit, 3600),
    ], name


def test_windows_count_in_order_and_stop_at_the_first_over_its_limit(backend):
    counted, name = windows(minute_limit=2, hour_limit=10)
    assert [request_windows.count(counted) for _ in range(4)] == [[1, 1], [2, 2], [3], [4]]
    # django-ratelimit reads the same counters: the hour was not eaten by the minute's refusals.
    hour = ratelimit.get_usage(None, group=request_windows.GROUP, key=lambda *_: name, rate="10/h")
    minute = ratelimit.get_usage(None, group=request_windows.GROUP, key=lambda *_: name, rate="2/m")
    assert (minute["count"], hour["count"]) == (4, 2)


def test_a_window_expires_as_django_ratelimit_sets_it():
    counted, _ = windows()
    request_windows.count(counted)
    run_script = getattr(cache, "run_script", None)
    if run_script is None:
        expiry = cache._expire_info[cache.make_key(counted[0][0])] - time.time()
    else:
        expiry = run_script("return redis.call('TTL', KEYS[1])", [counted[0][0]], [])
    assert 60 < expiry <= 60 + ratelimit.EXPIRATION_FUDGE


def test_concurrent_calls_are_counted_exactly(backend):
    counted, _ = windows(minute_limit=10, hour_limit=1000)
    results = []

    def one():
        results.append(request_windows.count(counted)[0])

    threads = [threading.Thread(target=one) for _ in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == list(range(1, 41))
    assert sum(1 for count in results if count <= 10) == 10


def test_windows_are_counted_with_the_token_read_only_when_every_counter_is_there_and_under_its_limit(backend):
    counted, name = windows(minute_limit=5, hour_limit=10)
    used, other, breaker = f"{name}:tokens", f"{name}:tokens2", f"{name}:breaker"
    cache.set(used, 100)
    cache.set(breaker, {"state": "open"})

    def minute():
        return ratelimit.get_usage(None, group=request_windows.GROUP, key=lambda *_: name, rate="5/m")["count"]

    found, counts = request_windows.read_then_count([(used, 1000)], [breaker, f"{name}:none"], counted)
    assert found == {used: 100, breaker: {"state": "open"}}
    assert counts == [1, 1]
    # A counter missing (to be seeded from the database): nothing counted.
    found, counts = request_windows.read_then_count([(used, 1000), (other, 1000)], [], counted)
    assert (found, counts, minute()) == ({used: 100}, None, 1)
    # A counter used up: the call is refused, and a refused call counts in no window.
    cache.set(other, 1000)
    found, counts = request_windows.read_then_count([(used, 1000), (other, 1000)], [], counted)
    assert (found, counts, minute()) == ({used: 100, other: 1000}, None, 1)
    # Under every limit again: counted, up to the first window over its limit.
    cache.set(other, 999)
    assert request_windows.read_then_count([(used, 1000), (other, 1000)], [], counted)[1] == [2, 2]
    assert request_windows.read_then_count([(used, 1000)], [], [])[1] == []
