"""Budgets in money: per key, per team (across its keys) and per route, per calendar day and month.

A call's cost is known only when it ends, so admission reserves an estimate and the end of the
call settles it (proxy/pipeline.py: admit, then finish):

- estimate: the request's input (its size in bytes / usage.BYTES_PER_TOKEN tokens) and output
  (its max_tokens or max_completion_tokens, else the route's default_max_tokens) at the highest
  price among the route's targets for the requested model; 0 without a price.
- admit: the reservation is added to the scope's `held` counter first, then the `spent` counter is
  read. The call is refused (429 budget_exceeded, Retry-After until the period resets) when
  spent + the reservations of the OTHER calls in flight has reached the budget; never for its
  own estimate alone, so calls made one at a time spend exactly up to the budget.
- settle: the real cost is added to `spent`, then the reservation is taken off `held` (in that
  order, so a concurrent admission always sees a finishing call at least once; on Redis, every
  budget's in one round trip, which also adds the call's tokens to its token quotas' counters).

Overspend bound: every admitted call saw spent + the others' reservations below the budget.
If no call costs more than it reserved, the period's spend exceeds the budget by less than the
largest estimate of one call; a call that costs more than its estimate (an input larger than
its byte count / 4 tokens, or no max_tokens and more output than the route's default) adds its
excess. tests/proxy/test_budgets_concurrency.py measures it with 50 concurrent calls at two instances.

Alerts: settle reads the spend counter's new value from its atomic increment; a call whose cost
carries it across one of the budget's alert thresholds (50, 80, 100 % unless set otherwise) notes
the crossing in its detail, and the log writer records it as a BudgetAlert (proxy/alerts.py),
which the jobs workers send. Exactly one call crosses each threshold of a counter, whatever the
number of processes and instances; the alert's unique constraint covers a counter reseeded from
the log. No query and no extra cache round trip on the call path.

Counters live in the shared cache (Redis in production), in picos of GATEWAY_CURRENCY, so every
worker and instance shares them; `spent` is seeded from the request log when missing (a new
period, a restarted cache). A reservation whose call never settles (a killed process) stays until
its period's counter expires. With the cache unreachable, GATEWAY_CACHE_FAILURE decides, as for
quotas: "open" serves without budget checks, "closed" answers 503.
"""

import logging
import re
from datetime import datetime

from django.conf import settings
from django.core.cache import cache
from django.db.models import Sum
from django.utils import timezone

from routes_admin.models import ErrorType, RequestLog
from routes_admin.pricing import crossed, from_picos, plain, to_picos

from . import cache_policy, token_quota
from .errors import CacheUnavailable, RateLimited
from .usage import BYTES_PER_TOKEN

log = logging.getLogger("gateway.budgets")

# budget field -> the token quotas' calendar period of the same length (proxy/token_quota.py)
PERIODS = {"budget_per_day": "tokens_per_day", "budget_per_month": "tokens_per_month"}
MAX_TOKENS = re.compile(rb'"max_(?:completion_)?tokens"\s*:\s*(\d{1,9})')


class BudgetExceeded(RateLimited):
    error_type = ErrorType.BUDGET_EXCEEDED


class Counter:
    """One budget of one scope in the current period."""

    __slots__ = (
        "kind",
        "owner_id",
        "owner_name",
        "label",
        "name",
        "budget",
        "limit",
        "period",
        "thresholds",
        "spent_key",
        "held_key",
    )

    def __init__(self, kind: str, owner_id: int, owner_name: str, name: str, budget, period, thresholds=()):
        self.kind, self.owner_id, self.owner_name, self.name, self.budget, self.period = (
            kind,
            owner_id,
            owner_name,
            name,
            budget,
            period,
        )
        self.limit = to_picos(budget)
        self.label = f"{kind} {owner_name}"
        self.thresholds = thresholds  # percentages of the budget whose crossing is an alert
        self.spent_key = f"budget:spent:{kind}{owner_id}:{period.tag}"
        self.held_key = f"budget:held:{kind}{owner_id}:{period.tag}"

    def ttl(self, now: datetime) -> int:
        return self.period.seconds_left(now) + token_quota.GRACE_SECONDS


class Hold:
    """What a call reserved: settled once when it ends."""

    __slots__ = ("counters", "picos", "settled")

    def __init__(self, counters: list[Counter], picos: int):
        self.counters, self.picos, self.settled = counters, picos, False


def counters_for(key, route, now: datetime) -> list[Counter]:
    """The budgets that apply to a call of `key` (a KeyInfo) on `route` now. Made once per route
    and day in the key's copy of the configuration (key.budget_counters), which a change replaces."""
    periods = token_quota.periods(now)
    day = periods["tokens_per_day"].tag
    made = key.budget_counters
    if made.get("day") != day:  # a new day: new periods, new counter keys
        made.clear()
        made["day"] = day
    route_id = route.id if route is not None else None
    found = made.get(route_id)
    if found is None:
        found = made[route_id] = _counters(key, route, periods)
    return found


def _counters(key, route, periods: dict) -> list[Counter]:
    found = []
    scopes = [("key", key.id, key.name, key.budgets, key.alert_thresholds)]
    if key.team_id is not None:
        scopes.append(("team", key.team_id, key.team_name, key.team_budgets, key.team_alert_thresholds))
    if route is not None:
        scopes.append(("route", route.id, route.name, route.budgets, route.alert_thresholds))
    for kind, owner_id, owner_name, budgets, thresholds in scopes:
        for name, budget in budgets.items():
            found.append(Counter(kind, owner_id, owner_name, name, budget, periods[PERIODS[name]], thresholds))
    return found


def estimate(call, body: bytes) -> int:
    """The call's reservation in picos: its input and most output at the route's highest price."""
    prices = call.prices
    if not prices or not call.model:
        return 0
    match = MAX_TOKENS.search(body) if b"max_" in body else None
    output = int(match.group(1)) if match else call.route.default_max_tokens
    prompt = len(body) // BYTES_PER_TOKEN
    highest = 0
    for target in call.route.targets or ((None),):
        model = target.model_aliases.get(call.model, call.model) if target is not None else call.model
        price = prices.find(model, target.id if target is not None else None, call.created)
        if price is not None:  # whole picos: exact, as the cost itself (routes_admin/pricing.py)
            highest = max(highest, price.picos(prompt, output, per_call=True))
    return highest


def admit(call, body: bytes) -> None:
    """Reserve the call's estimate under every budget that applies, or raise BudgetExceeded."""
    now = timezone.now()
    counters = counters_for(call.key, call.route, now)
    if not counters:
        return
    picos = estimate(call, body)
    try:
        _reserve(call, counters, picos, now)
    except BudgetExceeded:
        raise
    except Exception as exc:
        if not cache_policy.unreachable(exc):
            raise
        if cache_policy.fail_closed():
            log.error(
                "budget state unreachable, refusing call %s (GATEWAY_CACHE_FAILURE=closed): %r", call.request_id, exc
            )
            raise CacheUnavailable() from None
        log.warning("budget state unreachable, serving call %s without budget checks: %r", call.request_id, exc)


def _incr(key: str, amount: int, ttl: int) -> int:
    try:
        return cache.incr(key, amount)
    except ValueError:  # missing (a new period): create it, then add
        cache.add(key, 0, ttl)
        return cache.incr(key, amount)


def _reserve(call, counters: list[Counter], picos: int, now: datetime) -> None:
    spent_keys = [c.spent_key for c in counters]
    if picos:
        # The reservations, then the spend read, in one round trip on Redis (a pipeline runs them in
        # this order). A counter still missing (a new period) is made now; the spend is then read
        # again, after it, so the order between the two holds for every counter.
        added, spent = cache.incr_many([(c.held_key, picos) for c in counters], spent_keys)
        held = {}
        for counter, value in zip(counters, added, strict=True):
            if value is None:
                value = _incr(counter.held_key, picos, counter.ttl(now))
                spent = None
            held[counter.held_key] = value
    else:
        held, spent = cache.get_many([c.held_key for c in counters]), None
    call.budget_hold = Hold(counters, picos)  # from here on, finishing the call gives it back
    if spent is None:
        spent = cache.get_many(spent_keys)
    for counter in counters:
        used = spent.get(counter.spent_key)
        if used is None:
            used = seed(counter, now)
        others = int(held.get(counter.held_key) or 0) - picos
        if int(used) + others >= counter.limit:
            _refuse(counter, int(used), others, now)


def _refuse(counter: Counter, spent: int, others: int, now: datetime) -> None:
    currency = settings.GATEWAY_CURRENCY
    period = "daily" if counter.name == "budget_per_day" else "monthly"
    reset = counter.period.seconds_left(now)
    message = (
        f"The {period} budget of {plain(counter.budget)} {currency} of {counter.label} is reached "
        f"({plain(from_picos(spent))} spent"
        + (f", {plain(from_picos(max(0, others)))} reserved by calls in flight" if others > 0 else "")
        + f"); retry in {reset} seconds."
    )
    limit = counter.name if counter.kind == "key" else f"{counter.kind}_{counter.name}"
    raise BudgetExceeded(
        message,
        headers={"Retry-After": str(reset)},
        limit=limit,
        quota={
            "name": limit,
            "budget": str(counter.budget),
            "spent": str(from_picos(spent)),
            "reserved_by_others": str(from_picos(max(0, others))),
            "currency": currency,
            "reset": reset,
        },
    )


def spent_in_database(counter: Counter) -> int:
    start = token_quota._midnight(counter.period.start)
    rows = RequestLog.objects.filter(created__gte=start, created__lt=counter.period.end)
    if counter.kind == "key":
        rows = rows.filter(api_key_id=counter.owner_id)
    elif counter.kind == "team":
        rows = rows.filter(api_key__team_id=counter.owner_id)
    else:
        rows = rows.filter(route_id=counter.owner_id)
    return to_picos(rows.aggregate(total=Sum("cost"))["total"])


def seed(counter: Counter, now: datetime) -> int:
    """Create a missing spent counter from the log; another process may win the race, then use its value."""
    used = spent_in_database(counter)
    if cache.add(counter.spent_key, used, counter.ttl(now)):
        return used
    value = cache.get(counter.spent_key)
    return used if value is None else int(value)


def settle(call, tokens: list[tuple[str, int]] = ()) -> list | None:
    """Add the call's real cost to its budgets' spend and give back its reservation. Never raises.

    `tokens`: the call's (token counter, tokens), from Admission.token_deltas(), added in the same
    round trip; returns their new values (None for a missing counter), or None when they were not
    added (no budget to settle, or the cache failed): Admission.release() then adds them itself.

    The spend counter's atomic increment answers its new value: when the call's cost carried it
    across one of the budget's alert thresholds, the crossing goes into the call's detail
    ("budget_alerts"), and the log writer records it as a BudgetAlert with the call's row
    (proxy/alerts.py). Exactly one call crosses each threshold, however many processes share the
    counter; no query is made here."""
    hold = call.budget_hold
    if hold is None or hold.settled:
        return None
    hold.settled = True
    picos = to_picos(call.cost)
    counters = hold.counters
    # Every cost added, then every reservation given back, in one round trip on Redis (a pipeline
    # runs them in this order): a concurrent admission still sees a finishing call at least once.
    deltas = [(c.spent_key, picos) for c in counters] if picos else []
    if hold.picos:
        deltas += [(c.held_key, -hold.picos) for c in counters]
    if not deltas:
        return None
    try:
        added, _ = cache.incr_many(deltas + list(tokens))
    except Exception as exc:  # the log still has the cost: a restarted cache reseeds from it
        log.warning("could not settle the budgets of call %s: %r", call.request_id, exc)
        return None
    tokens_added = added[len(deltas) :]
    if not picos:
        return tokens_added  # a missing reservation counter (its period over, a restarted cache) holds nothing
    now = None
    for counter, after in zip(counters, added[: len(counters)], strict=True):  # the costs come first
        try:
            if after is None:  # gone since admission (a restarted cache): seed it, then add (this
                # call is not in the log yet); the one case where its reservation went first
                now = now or timezone.now()
                seed(counter, now)
                after = cache.incr(counter.spent_key, picos)
            if counter.thresholds:
                _note_crossings(call, counter, after - picos, after)
        except Exception as exc:
            log.warning("could not settle the budget %s of call %s: %r", counter.spent_key, call.request_id, exc)
    return tokens_added


def _note_crossings(call, counter: Counter, before: int, after: int) -> None:
    for threshold in crossed(before, after, counter.limit, counter.thresholds):
        call.detail.setdefault("budget_alerts", []).append(
            {
                "scope": counter.kind,
                "owner_id": counter.owner_id,
                "owner_name": counter.owner_name,
                "budget": counter.name,
                "amount": str(counter.budget),
                "threshold": threshold,
                "period_start": counter.period.start.isoformat(),
                "spent": str(from_picos(after)),
            }
        )


def live_state(kind: str, owner) -> list[dict]:
    """An owner's budgets as the shared counters hold them now (for the back office; consumes
    nothing): per budget set, the period's spend (None when the counter is not there: no call
    this period, or a restarted cache) and the reservations of calls in flight. `owner` is an
    APIKey, Team or Route."""
    now = timezone.now()
    periods = token_quota.periods(now)
    counters = [
        Counter(kind, owner.pk, owner.name, name, getattr(owner, name), periods[PERIODS[name]])
        for name in owner.BUDGET_FIELDS
        if getattr(owner, name) is not None
    ]
    if not counters:
        return []
    values = cache.get_many([c.spent_key for c in counters] + [c.held_key for c in counters])
    return [
        {
            "name": c.name,
            "budget": c.budget,
            "spent": None if values.get(c.spent_key) is None else from_picos(int(values[c.spent_key])),
            "held": from_picos(max(0, int(values.get(c.held_key) or 0))),
            "reset": c.period.seconds_left(now),
        }
        for c in counters
    ]
