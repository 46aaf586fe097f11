"""Concurrency slots (max_concurrent): one entry per call in flight, each with its own expiry.

A scope's slots are a set of (call token, expiry) entries. Taking a slot drops the expired
entries, counts the rest and, under the limit, adds this call's entry, expiring
GATEWAY_INFLIGHT_TTL seconds later; releasing removes that entry. So:
- a slot whose call never released it (its process was killed, or the cache was unreachable at
  the end of the call) frees itself at most GATEWAY_INFLIGHT_TTL after the call started;
- a refused call writes nothing, so retries never extend anything;
- a release only ever removes its own entry: after a Redis restart or FLUSHDB the calls still
  running simply stop counting, and their releases cannot take slots from newer calls.
A call running longer than GATEWAY_INFLIGHT_TTL stops counting against the limit at that point.
On Redis each process also notes the slots it holds (gateway_project/slot_holders.py), so the
gunicorn master frees a killed worker's slots as soon as it sees the worker die.

On Redis the set is a sorted set scored by expiry, and taking a slot is one Lua script: one
round trip. Without Redis (the in-process cache) the same entries live in the cache as a dict,
changed under a process lock. Times are wall-clock seconds from `clock`, which tests replace.
"""

import secrets
import threading
import time

from django.conf import settings
from django.core.cache import cache

from gateway_project.slot_holders import holder_key

clock = time.time

# KEYS[1] the scope's set; ARGV: now, limit, expiry of the new entry, its token, key TTL in ms,
# this process's holder hash (not a declared key: the master, without Django, names it too).
TAKE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
local in_flight = redis.call('ZCARD', KEYS[1])
if in_flight >= tonumber(ARGV[2]) then
    return {0, in_flight}
end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
redis.call('HSET', ARGV[6], ARGV[4], KEYS[1])
redis.call('PEXPIRE', ARGV[6], ARGV[5])
return {1, in_flight + 1}
"""
RELEASE = """
redis.call('HDEL', ARGV[2], ARGV[1])
return redis.call('ZREM', KEYS[1], ARGV[1])
"""
COUNT = "return redis.call('ZCOUNT', KEYS[1], '(' .. ARGV[1], '+inf')"

_lock = threading.Lock()  # the in-process cache's read-modify-write


def take(key: str, limit: int) -> tuple[str | None, int]:
    """(token, calls in flight with this one) when a slot is free; (None, calls in flight) when not."""
    now, ttl = clock(), settings.GATEWAY_INFLIGHT_TTL
    token = secrets.token_hex(8)
    run_script = getattr(cache, "run_script", None)
    if run_script is not None:
        args = [now, limit, now + ttl, token, max(1, int(ttl * 1000)), _holder()]
        taken, in_flight = run_script(TAKE, [key], args)
        return (token if taken else None), in_flight
    with _lock:
        entries = {t: expiry for t, expiry in (cache.get(key) or {}).items() if expiry > now}
        if len(entries) >= limit:
            return None, len(entries)
        entries[token] = now + ttl
        cache.set(key, entries, ttl)
        return token, len(entries)


def release(key: str, token: str) -> None:
    run_script = getattr(cache, "run_script", None)
    if run_script is not None:
        run_script(RELEASE, [key], [token, _holder()])
        return
    with _lock:
        entries = cache.get(key) or {}
        if entries.pop(token, None) is None:
            return
        if entries:
            cache.set(key, entries, max(entries.values()) - clock())
        else:
            cache.delete(key)


def _holder() -> str:
    return holder_key(settings.CACHES["default"].get("KEY_PREFIX", ""))


def in_use(key: str) -> int:
    """Slots taken now (for the admin and tests)."""
    now = clock()
    run_script = getattr(cache, "run_script", None)
    if run_script is not None:
        return run_script(COUNT, [key], [now])
    return sum(1 for expiry in (cache.get(key) or {}).values() if expiry > now)
