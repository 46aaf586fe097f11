"""cache.incr_many (gateway_project/cache.py): several counters added to and keys read in one
round trip on Redis, under one hold of the lock in the in-process cache; the same answers on both."""

import warnings

import pytest
from django.core.cache import cache, caches

from gateway_project.cache import SharedRedisCache


@pytest.fixture
def counters():
    cache.delete_many(["c:a", "c:b", "c:missing", "c:other"])
    cache.set("c:a", 5)
    cache.set("c:b", 10)
    yield
    cache.delete_many(["c:a", "c:b", "c:missing", "c:other"])


def test_counters_are_added_to_and_keys_read_after_them(counters):
    values, found = cache.incr_many([("c:a", 2), ("c:b", -3)], ["c:a", "c:missing"])
    assert values == [7, 7]
    assert found == {"c:a": 7}  # read after the increments, as get_many answers: absent keys left out


def test_a_missing_counter_is_none_and_stays_missing(counters):
    values, found = cache.incr_many([("c:missing", 1), ("c:a", 1)])
    assert values == [None, 6]
    assert found == {}
    assert cache.get("c:missing") is None


def test_an_expired_counter_is_none_and_is_gone(counters):
    cache.set("c:a", 5, 0)  # a timeout of 0: expired at once
    values, found = cache.incr_many([("c:a", 1), ("c:b", 1)], ["c:a"])
    assert values == [None, 11]
    assert found == {}
    assert cache.get("c:a") is None


@pytest.mark.skipif(not isinstance(caches["default"], SharedRedisCache), reason="Redis only: its Lua script")
def test_a_script_redis_forgot_is_loaded_again(counters):
    client = cache._cache._shared(True)[1]
    script = cache._cache._shared(True)[2]
    real = script.sha
    script.sha = "0" * 40  # as after a Redis restart: the server knows no such script
    try:
        values, _ = cache.incr_many([("c:a", 1)])
    finally:
        assert script.sha == real  # loaded again, under its own digest
    assert values == [6]
    assert client.script_exists(real) == [True]


def test_the_cache_takes_any_key_without_memcached_warnings():
    """Both backends (Django's in-process cache, and Redis) skip Django's per-key memcached check,
    which cost about half of each in-process cache operation; any key still works, unwarned."""
    key = "c:key with spaces and a long tail " + "x" * 300  # two memcached warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a CacheKeyWarning would fail here
        cache.set(key, 1)
        assert cache.incr(key, 2) == 3
        assert cache.get_many([key]) == {key: 3}
        cache.delete(key)
