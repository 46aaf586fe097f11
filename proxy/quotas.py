"""Step 4: admit a call under its key's limits and its route's cap, or refuse it with a 429.

Three scopes can limit a call: the key (its plan with the key's overrides), the key on the
route it matched (the route's plan, a cap that applies to every key on that route, counted per
key) and the key's team (the team's own limits, counted once for all its keys: counters named
"t<team id>", so they hold across processes and instances like the others). Only the limits
that are set cost anything; a key without limits costs no cache round trip.

The checks, in this order, all in the shared Django cache (Redis when REDIS_URL is set):
1. tokens: this period's counters are read in one get_many (proxy/token_quota.py); refuse when
   one has reached its limit. Nothing is taken. The route's breaker states come in the same
   round trip (`read_ahead`), which saves the forwarder one, and so do the request windows (3.)
   when no concurrency limit (2.) comes between: they are counted only if every counter is
   there and under its limit (proxy/request_windows.py, read_then_count).
2. concurrency: a slot is taken in one atomic step, or the call is refused (proxy/slots.py: one
   entry per call with its own expiry, so a slot never released heals). The slot is given back
   by Admission.release(), which the pipeline calls whatever the outcome.
3. request rates: django-ratelimit's fixed windows and keys, one window per limit, counted in one
   cache operation for all of them (proxy/request_windows.py). The check *is* the increment (that
   is what makes it exact across processes), so a refused call counts in the windows checked up
   to the one that refused it. Windows are checked shortest first and checking stops at the
   refusal, so a client hammering its per-minute limit never eats its hour or day quota.
After the call, its tokens are added to the token counters (Admission.release, streams included;
for a call with a budget, in the budgets' settlement round trip: proxy/budgets.py settle).

When the cache cannot be reached, GATEWAY_CACHE_FAILURE decides: "open" serves the call without
quota checks and logs a warning; "closed" answers 503 (proxy/cache_policy.py; any other error is
a bug and propagates).
"""

import logging
import time

from django.conf import settings
from django.core.cache import cache
from django.db.models import Count, Sum
from django.utils import timezone
from django_ratelimit import ALL
from django_ratelimit import core as ratelimit

from . import cache_policy, request_windows, slots, token_quota
from .errors import CacheUnavailable, GatewayError, RateLimited
from .ratelimit_headers import Quota, headers, refusal_headers

log = logging.getLogger("gateway.quotas")

# (limit, window in seconds, django-ratelimit period), shortest first: see the module docstring.
RATE_LIMITS = (("requests_per_minute", 60, "m"), ("requests_per_hour", 3600, "h"), ("requests_per_day", 86400, "d"))
RATE_GROUP = request_windows.GROUP
SLOT_PREFIX = "quota:slots:"  # a scope's slots (proxy/slots.py); not the old counters' "quota:inflight:"


class Scope:
    """Whose counters a limit uses: the key, the key on one capped route, or the key's team (all
    its keys together)."""

    __slots__ = ("value", "prefix", "key_id", "route_id", "route_name", "team_id", "team_name", "limits")

    def __init__(self, key_id: int, limits: dict, route=None, team: tuple[int, str] | None = None):
        self.key_id = key_id
        self.route_id = route.id if route is not None else None
        self.route_name = route.name if route is not None else ""
        self.team_id, self.team_name = team if team is not None else (None, "")
        if team is not None:
            self.value, self.prefix = f"t{self.team_id}", "team_"
        elif route is not None:
            self.value, self.prefix = f"k{key_id}:r{route.id}", "route_"
        else:
            self.value, self.prefix = f"k{key_id}", ""
        self.limits = limits

    def has_used(self, limit: str, amount: int) -> str:
        """The start of the refusal's message: who has used what."""
        what = f"{amount} {limit.replace('_', ' ')}"
        if self.team_id is not None:
            return f"The team {self.team_name} of this API key has used its limit of {what}"
        if self.route_id is not None:
            return f"This API key has used the cap of {what} on route {self.route_name}"
        return f"This API key has used its limit of {what}"

    def seed_args(self) -> dict:
        """Where a missing token counter restarts from (token_quota.used_in_database)."""
        return {"key_id": self.key_id, "route_id": self.route_id, "team_id": self.team_id}


def scopes_for(key, route) -> list[Scope]:
    """The scopes with at least one limit set."""
    scopes = []
    limits = {name: value for name, value in key.limits.items() if value is not None}
    if limits:
        scopes.append(Scope(key.id, limits))
    if route is not None and route.limits:
        limits = {name: value for name, value in route.limits.items() if value is not None}
        if limits:
            scopes.append(Scope(key.id, limits, route))
    if key.team_limits:  # only the limits that are set (proxy/config.py)
        scopes.append(Scope(key.id, key.team_limits, team=(key.team_id, key.team_name)))
    return scopes


class Admission:
    """What admitting a call took; release() gives it back when the call ends, however it ends.

    `quotas` is the limits' state for the answer's RateLimit headers. A refused call releases
    what it had taken before the refusal (a slot, say) the same way.
    """

    __slots__ = ("quotas", "slots", "token_scopes")

    def __init__(self):
        self.quotas: list[Quota] = []
        self.slots: list[tuple[str, str]] = []  # (scope's slot key, this call's token) taken
        self.token_scopes: list[Scope] = []  # scopes whose token counters get this call's tokens

    def token_deltas(self, call) -> list[tuple[str, int]]:
        """(cache key, tokens) for each token counter the call's tokens go to; none without tokens.
        budgets.settle adds them in its round trip, and release() is then given the new values."""
        tokens = _tokens(call)
        if not tokens:
            return []
        return [(key, tokens) for key, *_ in _token_counters(self.token_scopes, timezone.now())]

    def release(self, call, added: list | None = None) -> None:
        """Give back the slots and add the call's tokens, unless `added` holds the counters' new
        values from token_deltas() (None for a missing counter, which is seeded and added here)."""
        for key, token in self.slots:
            try:
                slots.release(key, token)
            except cache_policy.UNREACHABLE as exc:
                log.warning(
                    "could not release slot %s of call %s, free again within GATEWAY_INFLIGHT_TTL: %r",
                    key,
                    call.request_id,
                    exc,
                )
        if self.token_scopes:
            _add_tokens(self.token_scopes, call, added)


def admit(call, read_ahead: list[str] = ()) -> Admission:
    """Admit the call (call.admission) or raise RateLimited.

    `read_ahead`: cache keys that the next steps will read. When the token counters are read,
    these come in the same round trip and land in call.read_ahead.
    """
    admission = call.admission = Admission()
    scopes = scopes_for(call.key, call.route)
    if not scopes:
        return admission
    try:
        _admit(call, admission, scopes, list(read_ahead))
    except GatewayError:
        raise
    except Exception as exc:
        _unreachable(call, admission, exc)
    return admission


def admit_job(call) -> Admission:
    """Admit a queued job when a worker runs it (call.admission), or raise RateLimited.

    Its request was counted, and its concurrency checked, when it was accepted (the 202); what it
    spends is only known now, so its token counters are checked now, exactly as a call's are: a key
    that has used its tokens gets the same 429 (and the job fails with it). The call's tokens are
    added to the counters when it ends. Nothing else is taken.
    """
    admission = call.admission = Admission()
    scopes = _token_scopes(scopes_for(call.key, call.route))
    if not scopes:
        return admission
    try:
        _check_tokens(call, scopes, admission.quotas, [])
    except GatewayError:
        raise
    except Exception as exc:
        _unreachable(call, admission, exc)
    admission.token_scopes = scopes
    return admission


def _unreachable(call, admission: Admission, exc: Exception) -> None:
    """The cache failed while admitting: GATEWAY_CACHE_FAILURE decides (503, or serve unchecked)."""
    if not cache_policy.unreachable(exc):
        raise exc  # a bug, not an outage: the call gets a 500 and the error is logged
    if cache_policy.fail_closed():
        log.error("quota state unreachable, refusing call %s (GATEWAY_CACHE_FAILURE=closed): %r", call.request_id, exc)
        raise CacheUnavailable() from None
    log.warning(
        "quota state unreachable, serving call %s without quota checks (GATEWAY_CACHE_FAILURE=open): %r",
        call.request_id,
        exc,
    )
    admission.quotas = []  # no RateLimit headers: nothing was checked


def _token_scopes(scopes: list[Scope]) -> list[Scope]:
    return [scope for scope in scopes if any(name in scope.limits for name in token_quota.TOKEN_LIMITS)]


def answer_headers(admission: Admission) -> list[tuple[str, str]]:
    """RateLimit-Policy and RateLimit on an admitted call's answer: what remains after it."""
    return list(headers(admission.quotas).items())


def _admit(call, admission: Admission, scopes: list[Scope], read_ahead: list[str]) -> None:
    quotas = admission.quotas
    windows = _windows(scopes)
    # Without a concurrency limit nothing is checked between the tokens and the request windows,
    # so the windows are counted in the tokens' round trip, once they pass (request_windows.py).
    along = windows if not any("max_concurrent" in scope.limits for scope in scopes) else []
    counts = _check_tokens(call, scopes, quotas, read_ahead, along)
    _take_slots(admission, scopes, quotas)
    if windows:
        _count_request(windows, counts, quotas)
    admission.token_scopes = _token_scopes(scopes)


def _refuse(quotas: list[Quota], quota: Quota, message: str):
    # As Retry-After says it: a window ending this very second resets in 1 s, not 0.
    counter = {
        "name": quota.name,
        "limit": quota.limit,
        "used": quota.limit - quota.remaining,
        "reset": max(1, quota.reset),
    }
    raise RateLimited(message, headers=refusal_headers(quotas, quota), limit=quota.name, quota=counter)


def _check_tokens(call, scopes: list[Scope], quotas: list[Quota], read_ahead: list[str], along: list = ()):
    """Refuse the call when a token counter is used up. `along`: request windows (_windows) to
    count in the same round trip if none is; returns their counts, or None when not counted."""
    if not _token_scopes(scopes):
        return None
    now = timezone.now()
    counters = _token_counters(scopes, now)
    if along:
        values, counts = request_windows.read_then_count(
            [(key, scope.limits[name]) for key, name, _, scope in counters],
            read_ahead,
            _window_counters(along),
        )
    else:
        values, counts = cache.get_many([key for key, *_ in counters] + read_ahead), None
    if read_ahead:
        call.read_ahead = {key: values.get(key) for key in read_ahead}
    refused = None
    for key, name, period, scope in counters:
        limit = scope.limits[name]
        used = values.get(key)
        used = int(used) if used is not None else token_quota.seed(key, period, now, **scope.seed_args())
        quota = Quota(scope.prefix + name, limit, limit - used, period.seconds_left(now), period.length, "tokens")
        quotas.append(quota)
        if used >= limit and refused is None:
            refused = (scope, quota)
    if refused:
        scope, quota = refused
        _refuse(
            quotas,
            quota,
            f"{scope.has_used(quota.name.removeprefix(scope.prefix), quota.limit)}; retry in {quota.reset} seconds.",
        )
    return counts


def _take_slots(admission: Admission, scopes: list[Scope], quotas: list[Quota]) -> None:
    for scope in scopes:
        limit = scope.limits.get("max_concurrent")
        if limit is None:
            continue
        key = SLOT_PREFIX + scope.value
        token, in_flight = slots.take(key, limit)
        name = scope.prefix + "max_concurrent"
        if token is None:
            quota = Quota(name, limit, 0, 1, unit="concurrent-requests")
            quotas.append(quota)
            if scope.team_id is not None:
                who = f"The team {scope.team_name} of this API key already has {limit} calls in flight, its limit"
            else:
                who = f"This API key already has {limit} calls in flight" + (
                    f" on route {scope.route_name}, the route's cap" if scope.route_id else ", its limit"
                )
            _refuse(quotas, quota, who + " (max_concurrent); retry when one finishes.")
        admission.slots.append((key, token))
        quotas.append(Quota(name, limit, limit - in_flight, 0, unit="concurrent-requests"))


def _windows(scopes: list[Scope]) -> list[tuple]:
    """(scope, limit name, limit, seconds, cache key, window end) of each request window the
    scopes set, shortest first; none when django-ratelimit's switch is off."""
    if not getattr(settings, "RATELIMIT_ENABLE", True):  # read as django-ratelimit reads it
        return []
    return [
        (scope, name, limit, seconds, *request_windows.window(scope.value, limit, period, seconds))
        for name, seconds, period in RATE_LIMITS
        for scope in scopes
        if (limit := scope.limits.get(name)) is not None
    ]


def _window_counters(windows: list[tuple]) -> list[tuple[str, int, int]]:
    """The (cache key, limit, seconds) of each window, as request_windows counts them."""
    return [(key, limit, seconds) for _, _, limit, seconds, key, _ in windows]


def _count_request(windows: list[tuple], counts: list[int] | None, quotas: list[Quota]) -> None:
    """The windows' state for the headers, or the refusal; `counts`: counted already, else None."""
    if counts is None:
        counts = request_windows.count(_window_counters(windows))
    now = int(time.time())
    for (scope, name, limit, seconds, _, end), count in zip(windows, counts, strict=False):  # up to a refusal
        quota = Quota(scope.prefix + name, limit, limit - count, end - now, seconds)
        quotas.append(quota)
        if count > limit:
            _refuse(quotas, quota, f"{scope.has_used(name, limit)}; retry in {max(1, quota.reset)} seconds.")


def _tokens(call) -> int:
    """The tokens a call's usage reports (0 without)."""
    return max(0, (call.usage or {}).get("total_tokens") or 0)


def _token_counters(scopes: list[Scope], now) -> list[tuple[str, str, token_quota.Period, Scope]]:
    """(cache key, limit name, period, scope) of each token counter the scopes' limits set."""
    periods = token_quota.periods(now)
    return [
        (token_quota.counter_key(scope.value, periods[name]), name, periods[name], scope)
        for scope in scopes
        for name in token_quota.TOKEN_LIMITS
        if name in scope.limits
    ]


def _add_tokens(scopes: list[Scope], call, added: list | None) -> None:
    tokens = _tokens(call)
    if not tokens or (added is not None and None not in added):  # none, or all added by the settlement
        return
    now = timezone.now()
    counters = _token_counters(scopes, now)
    for (key, name, period, scope), value in zip(counters, added or [None] * len(counters), strict=True):
        if value is not None:  # added in the settlement's round trip
            continue
        try:
            token_quota.add(key, tokens, period, now, **scope.seed_args())
        except cache_policy.UNREACHABLE as exc:  # the database still has them (KeyUsage): a restart reseeds
            log.warning("could not add %d tokens of call %s to %s: %r", tokens, call.request_id, name, exc)


def live_state(key) -> list[Quota]:
    """The key's own limits as the cache counts them now (for the admin); consumes nothing."""
    limits = {name: value for name, value in key.effective_limits().items() if value is not None}
    return _live(Scope(key.id, limits))


def team_live_state(team) -> list[Quota]:
    """A team's limits as the cache counts them now (all its keys together); consumes nothing."""
    limits = {name: getattr(team, name) for name in team.LIMIT_FIELDS if getattr(team, name) is not None}
    return _live(Scope(0, limits, team=(team.id, team.name)))


def _live(scope: Scope) -> list[Quota]:
    now = timezone.now()
    state = []
    for name, window, period in RATE_LIMITS:
        limit = scope.limits.get(name)
        if limit is not None:
            usage = ratelimit.get_usage(
                None, group=RATE_GROUP, key=lambda *_: scope.value, rate=f"{limit}/{period}", method=ALL
            )
            if usage and usage["limit"]:
                state.append(Quota(name, limit, limit - usage["count"], usage["time_left"], window))
    periods = token_quota.periods(now)
    for name in token_quota.TOKEN_LIMITS:
        limit = scope.limits.get(name)
        if limit is not None:
            used = cache.get(token_quota.counter_key(scope.value, periods[name]))
            if used is None:  # no call yet this period (or the cache restarted): what the next call will see
                used = token_quota.used_in_database(periods[name], **scope.seed_args())
            state.append(Quota(name, limit, limit - int(used), periods[name].seconds_left(now), periods[name].length))
    if "max_concurrent" in scope.limits:
        limit = scope.limits["max_concurrent"]
        state.append(Quota("max_concurrent", limit, limit - slots.in_use(SLOT_PREFIX + scope.value), 0))
    return state


def reset_counters(key, routes=()) -> dict:
    """Forget a key's current request windows, token counters and this month's durable usage.

    `key` is an APIKey; `routes` the capped routes whose per-key counters go too. In-flight slots
    are left alone: they belong to calls still running. Returns what the deleted usage rows held
    (days, requests, total_tokens, since), for the change history.
    """
    from routes_admin.models import KeyUsage

    now = timezone.now()
    periods = token_quota.periods(now)
    scopes = [Scope(key.id, key.effective_limits())]
    scopes += [Scope(key.id, {f: getattr(r.quota_plan, f) for f in r.quota_plan.LIMIT_FIELDS}, r) for r in routes]
    doomed = []
    for scope in scopes:
        doomed += [token_quota.counter_key(scope.value, p) for p in periods.values()]
        for name, window, period in RATE_LIMITS:
            limit = scope.limits.get(name)
            if limit:
                doomed.append(request_windows.window(scope.value, limit, period, window)[0])
    cache.delete_many(doomed)
    since = periods["tokens_per_month"].start
    usage = KeyUsage.objects.filter(api_key_id=key.id, day__gte=since)
    removed = usage.aggregate(days=Count("id"), requests=Sum("requests"), total_tokens=Sum("total_tokens"))
    usage.delete()
    return {**removed, "since": str(since)}
