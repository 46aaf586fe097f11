"""Request-rate windows (requests per minute, hour, day): django-ratelimit's fixed windows and
cache keys, all of a call's counted in one cache operation.

django-ratelimit's get_usage makes two cache operations per window, an add and then an incr: on
Redis two round trips, about 530 k instructions of redis-py per call with one limit, and twice
that with two. Here a call's windows are counted together, shortest first, stopping at the first
one over its limit (so a client hammering its per-minute limit never eats its hour or day quota):
one Lua script on Redis (one round trip, atomic), one hold of the lock on the in-process cache
(gateway_project/cache.py), add-then-incr per window on any other backend.

The windows and keys are django-ratelimit's own (its helpers, pinned 4.1.0 by the lock), set to
expire as its add sets them: the console's live state (get_usage without increment) and
reset_counters (proxy/quotas.py) read and delete the same counters.
"""

from functools import lru_cache

from django.core.cache import cache
from django.core.cache.backends.redis import RedisSerializer
from django_ratelimit import ALL
from django_ratelimit import core as ratelimit

GROUP = "gateway.requests"

# Read keys, then count windows, in one round trip: what count() and read_then_count() run on Redis.
# KEYS: the token counters, the other keys to read, the windows' counters (shortest first). ARGV:
# how many token counters and other keys, each token counter's limit, then each window's limit and
# expiry in turn. The windows are counted only if every token counter exists and is under its
# limit, up to the first window over its limit. Returns the values read and the counts.
READ_THEN_COUNT = """
local tokens, others = tonumber(ARGV[1]), tonumber(ARGV[2])
local values = {}
if tokens + others > 0 then
    values = redis.call('MGET', unpack(KEYS, 1, tokens + others))
end
for i = 1, tokens do
    if not values[i] or tonumber(values[i]) >= tonumber(ARGV[2 + i]) then
        return {values, {}}
    end
end
local counts, arg = {}, 2 + tokens
for i = tokens + others + 1, #KEYS do
    local count = 1
    if not redis.call('SET', KEYS[i], 1, 'NX', 'EX', ARGV[arg + 2]) then
        count = redis.call('INCR', KEYS[i])
    end
    counts[#counts + 1] = count
    if count > tonumber(ARGV[arg + 1]) then
        break
    end
    arg = arg + 2
end
return {values, counts}
"""
_serializer = RedisSerializer()  # Django's, as the cache stores values


def window(value: str, limit: int, period: str, seconds: int) -> tuple[str, int]:
    """(cache key, end of the current window in epoch seconds) of the window `limit`/`period`
    (m, h or d, `seconds` long) of the counter named `value`, as django-ratelimit names them."""
    end = ratelimit._get_window(value, seconds)
    return _key(value, f"{limit}/{period}", end), end


@lru_cache(maxsize=4096)
def _key(value: str, rate: str, end: int) -> str:
    return ratelimit._make_cache_key(GROUP, end, rate, value, ALL)  # a sha256 per window, not per call


def count(windows: list[tuple[str, int, int]]) -> list[int]:
    """Count a call in each window (cache key, limit, length in seconds), in order, up to and
    including the first that goes over its limit. Returns the counts, one per window counted."""
    return read_then_count([], [], windows)[1]


def read_then_count(
    counters: list[tuple[str, int]], others: list[str], windows: list[tuple[str, int, int]]
) -> tuple[dict, list[int] | None]:
    """Read the token counters (cache key, limit) and the keys `others`; when every counter
    exists and is under its limit, count the windows (as count() says), in the same operation: one
    round trip on Redis. Returns the values found (as get_many) and the counts, or None when the
    windows were not counted: a counter is missing (to be seeded from the database) or used up
    (the call is refused, and a refused call counts in no window)."""
    keys = [key for key, _ in counters] + others
    expiring = [(key, limit, seconds + ratelimit.EXPIRATION_FUDGE) for key, limit, seconds in windows]
    run_script = getattr(cache, "run_script", None)
    if run_script is not None:  # Redis: the reads and the counts in one script
        args = [len(counters), len(others), *(limit for _, limit in counters)]
        args += [v for _, limit, expiry in expiring for v in (limit, expiry)]
        values, counts = run_script(READ_THEN_COUNT, keys + [key for key, _, _ in expiring], args)
        found = {key: _serializer.loads(value) for key, value in zip(keys, values, strict=True) if value is not None}
    else:
        found, counts = (cache.get_many(keys) if keys else {}), None
    if not all(key in found and int(found[key]) < limit for key, limit in counters):
        return found, None
    return found, (counts if counts is not None else _count_here(expiring))


def _count_here(expiring: list[tuple[str, int, int]]) -> list[int]:
    """count() without Redis: under one hold of the in-process cache's lock, else add-then-incr."""
    count_windows = getattr(cache, "count_windows", None)
    if count_windows is not None:
        return count_windows(expiring)
    counts = []
    for key, limit, expiry in expiring:
        counts.append(1 if cache.add(key, 1, expiry) else cache.incr(key))
        if counts[-1] > limit:
            break
    return counts
