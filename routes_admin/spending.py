"""What keys, teams and routes have spent today and this month, read from the usage rollups (never
a scan of the request log), for the key's and team's pages and the dashboard.

Budgets count calendar days and months in TIME_ZONE, while rollups are summed per UTC minute, hour
and day. A period [start, now) is read from the coarsest rollups that tile it: minutes up to the
first whole hour, hours up to the first UTC midnight, days from there. When TIME_ZONE is a whole
number of hours from UTC (nearly every zone) a day or month starts on an hour and no minute is
read; otherwise its first minutes come from the minute rollups, kept GATEWAY_ROLLUP_MINUTE_DAYS.

Rollups are written with the log rows, so these figures lag the calls by GATEWAY_LOG_FLUSH_SECONDS
at most; the budgets' live counters (proxy/state.py) are what admits or refuses a call. A key is
summed as "#<id>" (one key across rotations), a team and a route by the name its rows recorded.
"""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from django.db.models import Sum
from django.utils import timezone

from .models import Budgets, UsageRollup
from .pricing import from_picos

DIMENSIONS = {"key": "key", "team": "team", "route": "route"}
PERIOD_OF_BUDGET = {"budget_per_day": "today", "budget_per_month": "month"}
NEAR = 80  # percent: a budget counts as "near" from here


@dataclass
class Spend:
    spent: Decimal = Decimal(0)
    unpriced: int = 0  # calls whose model has no price: not in `spent`


def period_starts(now: datetime | None = None) -> dict[str, datetime]:
    """The start of today and of this month in TIME_ZONE (the budgets' calendar), as aware times."""
    today = timezone.localdate(now or timezone.now())
    midnight = datetime.combine(today, datetime.min.time())
    return {
        "today": timezone.make_aware(midnight),
        "month": timezone.make_aware(midnight.replace(day=1)),
    }


def tiles(start: datetime) -> list[tuple[str, datetime, datetime | None]]:
    """(rollup period, from, until or None: open) covering [start, now) with the coarsest rollups."""
    start = start.astimezone(UTC).replace(second=0, microsecond=0)
    hour = start.replace(minute=0)
    hour = hour if hour == start else hour + timedelta(hours=1)
    day = start.replace(hour=0, minute=0)
    day = day if day == start else day + timedelta(days=1)
    found = []
    if start < hour:
        found.append(("minute", start, hour))
    if hour < day:
        found.append(("hour", hour, day))
    found.append(("day", day, None))
    return found


def spent_by(dimension: str, values, start: datetime) -> dict[str, Spend]:
    """value -> what it spent from `start` until now, for the given values of one rollup dimension."""
    values = list(values)
    totals = {value: Spend() for value in values}
    if not values:
        return totals
    for period, since, until in tiles(start):
        rows = UsageRollup.objects.filter(period=period, dimension=dimension, start__gte=since, value__in=values)
        if until is not None:
            rows = rows.filter(start__lt=until)
        summed = rows.order_by().values("value").annotate(picos=Sum("cost_picos"), unpriced=Sum("unpriced"))
        for item in summed:
            found = totals[item["value"]]
            found.spent += from_picos(item["picos"] or 0)
            found.unpriced += item["unpriced"] or 0
    return totals


def rollup_value(kind: str, owner) -> str:
    """How the rollups name a key (by id), a team or a route (by name)."""
    return f"#{owner.pk}" if kind == "key" else owner.name


def owner_spend(kind: str, owner, now: datetime | None = None) -> dict[str, Spend]:
    """{"today": Spend, "month": Spend} of one key, team or route."""
    value = rollup_value(kind, owner)
    return {period: spent_by(DIMENSIONS[kind], [value], start)[value] for period, start in period_starts(now).items()}


def against_budgets(owner, spend: dict[str, Spend]) -> list[dict]:
    """One line per budget the owner has set: its period, the budget, what was spent, the percent."""
    lines = []
    for name in Budgets.BUDGET_FIELDS:
        budget = getattr(owner, name)
        if budget is None:
            continue
        period = PERIOD_OF_BUDGET[name]
        spent = spend[period].spent
        lines.append(
            {
                "name": name,
                "period": period,
                "budget": budget,
                "spent": spent,
                "percent": float(100 * spent / budget) if budget else 0.0,
            }
        )
    return lines


def near_budgets(kind: str, owners, now: datetime | None = None, near: int = NEAR) -> list[dict]:
    """Owners (keys or teams with a budget) at `near` % or more of a budget, fullest first."""
    owners = list(owners)
    if not owners:
        return []
    values = {owner.pk: rollup_value(kind, owner) for owner in owners}
    spent = {period: spent_by(DIMENSIONS[kind], values.values(), start) for period, start in period_starts(now).items()}
    found = []
    for owner in owners:
        spend = {period: spent[period][values[owner.pk]] for period in spent}
        for line in against_budgets(owner, spend):
            if line["percent"] >= near:
                found.append({"owner": owner, "kind": kind, **line})
    return sorted(found, key=lambda line: -line["percent"])
