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
from django_ratelimit import ALL
from django_ratelimit import core as ratelimit

GROUP = "gateway.requests"

# KEYS: the windows' counters, shortest first; ARGV: each window's limit and expiry (seconds), in turn.
COUNT = """
local counts = {}
for i, key in ipairs(KEYS) do
    local count = 1
    if not redis.call('SET', key, 1, 'NX', 'EX', ARGV[2 * i]) then
        count = redis.call('INCR', key)
    end
    counts[i] = count
    if count > tonumber(ARGV[2 * i - 1]) then
        break
    end
end
return counts
"""


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
    expiring = [(key, limit, seconds + ratelimit.EXPIRATION_FUDGE) for key, limit, seconds in windows]
    run_script = getattr(cache, "run_script", None)
    if run_script is not None:  # Redis
        return run_script(COUNT, [key for key, _, _ in expiring], [v for _, *pair in expiring for v in pair])
    count_windows = getattr(cache, "count_windows", None)
    if count_windows is not None:  # the in-process cache
        return count_windows(expiring)
    counts = []
    for key, limit, expiry in expiring:
        counts.append(1 if cache.add(key, 1, expiry) else cache.incr(key))
        if counts[-1] > limit:
            break
    return counts
