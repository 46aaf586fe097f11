"""Token quotas: per-day and per-month counters in the shared cache, seeded from the database.

A counter is the tokens a scope (a key, a key on a capped route, or a team: all its keys) used in one calendar period
(the server's local day or month, TIME_ZONE). Before forwarding the counters are read in one
round trip; after the call its tokens are added with the cache's atomic incr. When a counter is
missing (first call of the period, or the cache was restarted or flushed) it is seeded from the
database: KeyUsage for a key (and for the keys of a team), the request log for a key on a route. The database lags by at most
GATEWAY_LOG_FLUSH_SECONDS of calls, which is all a cache restart can lose.

Over-admission: a call is refused once the counter has reached the limit, and tokens are only
known when a call ends, so the calls already in flight when the limit is reached still finish.
The overshoot is at most those calls' tokens; no call that starts afterwards is admitted.
"""

from dataclasses import dataclass
from datetime import date, datetime, timedelta

from django.core.cache import cache
from django.db.models import Sum
from django.utils import timezone

from routes_admin.models import KeyUsage, RequestLog

from . import runtime

TOKEN_LIMITS = ("tokens_per_day", "tokens_per_month")
GRACE_SECONDS = 86400  # counters outlive their period by a day, so a late add never recreates one


@dataclass(frozen=True)
class Period:
    limit: str  # "tokens_per_day" or "tokens_per_month"
    tag: str  # "d20261126" or "m202611": part of the cache key
    start: date
    end: datetime  # aware; the next period starts here
    length: int  # seconds (the RateLimit-Policy window)

    def seconds_left(self, now: datetime) -> int:
        return max(1, int((self.end - now).total_seconds()))


class Periods:
    """This day's and month's periods, computed once a day per process (in its runtime)."""

    def __init__(self):
        self.current: tuple | None = None  # (day start, day end, periods)


def _midnight(day: date) -> datetime:
    return timezone.make_aware(datetime.combine(day, datetime.min.time()))


def periods(now: datetime) -> dict[str, Period]:
    """This day's and month's periods in the server's time zone (TIME_ZONE)."""
    cached = runtime.current().token_periods
    current = cached.current
    if current is not None and current[0] <= now < current[1]:
        return current[2]
    today = timezone.localdate(now)
    first = today.replace(day=1)
    day_start, day_end = _midnight(today), _midnight(today + timedelta(days=1))
    month_start, month_end = _midnight(first), _midnight((first + timedelta(days=32)).replace(day=1))
    found = {
        "tokens_per_day": Period(
            "tokens_per_day", f"d{today:%Y%m%d}", today, day_end, int((day_end - day_start).total_seconds())
        ),
        "tokens_per_month": Period(
            "tokens_per_month", f"m{today:%Y%m}", first, month_end, int((month_end - month_start).total_seconds())
        ),
    }
    cached.current = (day_start, day_end, found)
    return found


def counter_key(scope_value: str, period: Period) -> str:
    return f"quota:tokens:{scope_value}:{period.tag}"


def used_in_database(period: Period, *, key_id: int, route_id: int | None = None, team_id: int | None = None) -> int:
    """The durable total a counter restarts from: the key's KeyUsage, the team's keys' KeyUsage, or
    the request log of a key on a route."""
    if team_id is not None:
        rows = KeyUsage.objects.filter(api_key__team_id=team_id, day__gte=period.start, day__lt=period.end.date())
    elif route_id is None:
        rows = KeyUsage.objects.filter(api_key_id=key_id, day__gte=period.start, day__lt=period.end.date())
    else:
        rows = RequestLog.objects.filter(api_key_id=key_id, route_id=route_id, created__gte=_midnight(period.start))
    return rows.aggregate(total=Sum("total_tokens"))["total"] or 0


def seed(key: str, period: Period, now: datetime, **owner) -> int:
    """Create a missing counter from the database; another process may win the race, then use its value.
    `owner`: key_id, route_id, team_id as used_in_database takes them."""
    used = used_in_database(period, **owner)
    if cache.add(key, used, period.seconds_left(now) + GRACE_SECONDS):
        return used
    value = cache.get(key)
    return used if value is None else int(value)


def add(key: str, tokens: int, period: Period, now: datetime, **owner) -> None:
    """Add a finished call's tokens to one counter, atomically."""
    try:
        cache.incr(key, tokens)
    except ValueError:  # missing: seed it (this call is not in the database yet), then add
        seed(key, period, now, **owner)
        cache.incr(key, tokens)
