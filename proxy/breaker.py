"""Passive health: a target that keeps failing is skipped for a while (a circuit breaker).

State lives in the Django cache (Redis in production), so every worker and instance agrees:

- `breaker:<id>:failures`: failures (connection errors, timeouts, 5xx answers) counted in a
  window of GATEWAY_BREAKER_WINDOW seconds that starts at the first failure;
- `breaker:<id>`: present while the breaker is open: {"opened": t, "until": t + cooldown};
- `breaker:<id>:probe`: the lock (cache.add) that lets exactly one call probe the target once
  the cooldown is over. The probe's answer decides: success closes, failure reopens.

A call reads the open state of its route's targets with one get_many and writes nothing while
they are healthy. Times are stored in the values (wall clock, shared by all hosts), because cache
timeouts are whole seconds on Redis. If the cache is unreachable (proxy/cache_policy.py) every
breaker reads as closed: the gateway keeps serving without passive health rather than failing
calls, and no call probes, since no probe's outcome could be recorded. Any other error is a bug
and propagates.
"""

import logging
import math
import time
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache

from . import cache_policy, runtime

log = logging.getLogger("gateway.breaker")
KEEP_OPEN_STATE = 24 * 3600  # an open breaker's key outlives any cooldown; a probe decides, not expiry


class WarningThrottle:
    """When this process last reported an unreachable cache (in its runtime, proxy/runtime.py)."""

    def __init__(self):
        self.last = 0.0


def now() -> float:
    """Wall-clock seconds, the same on every host. Cooldowns are read against it; tests replace
    it (the `clock` fixture) instead of sleeping."""
    return time.time()


def _key(target_id: int) -> str:
    return f"breaker:{target_id}"


def _warn(action: str, exc: Exception) -> None:
    """Report an unreachable cache at most every 30 s, not once per call; re-raise anything else."""
    if not cache_policy.unreachable(exc):
        raise exc
    now = time.monotonic()
    warnings = runtime.current().cache_warnings
    if now - warnings.last > 30:
        warnings.last = now
        log.warning("cache unreachable while %s; circuit breakers read as closed", action, exc_info=True)


@dataclass(frozen=True)
class State:
    opened: float | None = None  # wall-clock time it opened; None when closed
    until: float = 0.0  # end of the cooldown

    @property
    def is_open(self) -> bool:
        return self.opened is not None

    def cooling(self, now: float) -> bool:
        """Open and still in its cooldown: the target is skipped."""
        return self.opened is not None and now < self.until


CLOSED = State()


def keys(target_ids) -> list[str]:
    """The cache keys states() reads, for a caller that reads them ahead with its own."""
    return [_key(i) for i in target_ids]


def states(target_ids, read_ahead: dict | None = None) -> dict[int, State]:
    """Open breakers among these targets; absent ids are closed.

    One cache round trip, or none when `read_ahead` (cache key -> value or None) already holds
    every key: the call read them with its token counters a moment earlier.
    """
    ids = list(target_ids)
    if not ids:
        return {}
    wanted = keys(ids)
    if read_ahead is not None and all(key in read_ahead for key in wanted):
        found = read_ahead
    else:
        try:
            found = cache.get_many(wanted)
        except Exception as exc:
            _warn("reading breaker state", exc)
            return {}
    result = {}
    for target_id, key in zip(ids, wanted, strict=True):
        value = found.get(key)
        if isinstance(value, dict):
            result[target_id] = State(opened=value.get("opened"), until=value.get("until", 0.0))
    return result


def claim_probe(target_id: int, hold: float) -> bool | None:
    """True for the one call that may probe a target whose cooldown is over, False for the others.

    None when the cache is unreachable: the breaker then reads as closed and the call uses the
    target as an ordinary attempt, not as a probe (every call would otherwise be one).
    `hold` bounds how long the lock outlives a probe whose process died before deciding.
    """
    try:
        return cache.add(f"{_key(target_id)}:probe", 1, timeout=max(1, math.ceil(hold)))
    except Exception as exc:
        _warn("claiming a probe", exc)
        return None


def _open(target_id: int, at: float) -> None:
    cooldown = settings.GATEWAY_BREAKER_COOLDOWN
    cache.set(_key(target_id), {"opened": at, "until": at + cooldown}, timeout=KEEP_OPEN_STATE)
    cache.delete_many([f"{_key(target_id)}:failures", f"{_key(target_id)}:probe"])


def record_failure(target_id: int, target_name: str, probe: bool) -> None:
    """A connection error, timeout or 5xx answer from this target."""
    at = now()
    try:
        if probe:
            log.warning("probe of target %s failed: breaker stays open", target_name)
            _open(target_id, at)
            return
        key = f"{_key(target_id)}:failures"
        window = max(1, math.ceil(settings.GATEWAY_BREAKER_WINDOW))
        cache.add(key, 0, timeout=window)
        try:
            failures = cache.incr(key)
        except ValueError:  # the window ended between add and incr
            cache.add(key, 1, timeout=window)
            failures = 1
        if failures >= settings.GATEWAY_BREAKER_FAILURES:
            log.warning("target %s failed %d times within %ss: breaker open", target_name, failures, window)
            _open(target_id, at)
    except Exception as exc:
        _warn("recording a failure", exc)


def record_success(target_id: int, target_name: str, probe: bool) -> None:
    """Only a probe's success writes: healthy calls cost nothing here."""
    if not probe:
        return
    log.warning("probe of target %s succeeded: breaker closed", target_name)
    reset(target_id)


def reset(target_id: int) -> None:
    """Close the breaker and forget the failures (the admin's reset does this too)."""
    try:
        cache.delete_many([_key(target_id), f"{_key(target_id)}:failures", f"{_key(target_id)}:probe"])
    except Exception as exc:
        _warn("resetting a breaker", exc)


def describe(target_ids) -> dict[int, dict]:
    """For the admin: each target's state, failures in the current window and times."""
    ids = list(target_ids)
    keys = [k for i in ids for k in (_key(i), f"{_key(i)}:failures", f"{_key(i)}:probe")]
    found = cache.get_many(keys) if keys else {}
    at = now()
    result = {}
    for target_id in ids:
        value = found.get(_key(target_id))
        failures = found.get(f"{_key(target_id)}:failures") or 0
        if not isinstance(value, dict):
            result[target_id] = {"state": "closed", "failures": failures, "opened": None, "until": None}
            continue
        if at < value["until"]:
            state = "open"
        elif f"{_key(target_id)}:probe" in found:
            state = "probing"
        else:
            state = "half-open"  # the next call probes it
        result[target_id] = {"state": state, "failures": failures, "opened": value["opened"], "until": value["until"]}
    return result
