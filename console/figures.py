"""The dashboard's figures, read from the usage rollups only (never a scan of the request log).

A range is read from the coarsest rollup that still draws it in enough points: minutes up to
3 hours, hours up to 8 days, days beyond. The rankings (by key, route, model) draw no points: over
a range read by the hour they sum its whole days from the daily rollups and only the hours at
either end from the hourly ones (a 7-day ranking reads about half the rows, each a page of its own
on a big table). Percentiles come from the rollups' latency histogram,
interpolated inside a bucket, so they are exact to within one bucket (edges step by at most 1.5x:
LATENCY_EDGES_MS in routes_admin/models.py).
"""

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from django.db.models import Q, Sum

from routes_admin.models import LATENCY_BUCKETS, LATENCY_EDGES_MS, APIKey, UsageRollup
from routes_admin.pricing import from_picos

STEPS = (
    ("minute", timedelta(minutes=1), timedelta(hours=3)),
    ("hour", timedelta(hours=1), timedelta(days=8)),
    ("day", timedelta(days=1), None),
)
STATUS_CLASSES = (2, 3, 4, 5, 0)
TOP = 10
SPEND_DIMENSIONS = ("key", "team", "route", "model")
SERIES_VALUES = 5  # the spend chart names this many of the biggest spenders; the rest are "others"


@dataclass
class Figures:
    start: datetime
    end: datetime
    period: str
    step: timedelta
    calls: int = 0
    failed: int = 0  # 4xx, 5xx and calls the client left
    tokens: dict = field(default_factory=dict)
    latency: dict = field(default_factory=dict)  # "p50" -> ms
    latency_mean: float | None = None
    series: list = field(default_factory=list)  # (start, {status class: calls}), one per step
    latency_series: list = field(default_factory=list)  # (start, {"p50": ms, ...})
    by_key: list = field(default_factory=list)
    by_route: list = field(default_factory=list)
    by_model: list = field(default_factory=list)
    by_team: list = field(default_factory=list)
    top_keys: list = field(default_factory=list)  # by calls
    spend: Decimal = Decimal(0)  # in GATEWAY_CURRENCY, from the rollups' exact picos
    unpriced: int = 0  # calls whose model has no price: not in `spend`
    spenders: dict = field(default_factory=dict)  # dimension -> items ranked by spend
    spend_by: str = "key"  # the dimension the spend series is split by
    spend_series: list = field(default_factory=list)  # (start, [picos of each spend_values item..., others])
    spend_values: list = field(default_factory=list)  # the spenders the series names, biggest first
    spend_others: bool = False  # the series' last column (others) is not all zero

    @property
    def error_rate(self) -> float | None:
        return self.failed / self.calls if self.calls else None


def step_for(start: datetime, end: datetime) -> tuple[str, timedelta]:
    for period, step, longest in STEPS:
        if longest is None or end - start <= longest:
            return period, step
    raise AssertionError("unreachable")


def floor(moment: datetime, period: str) -> datetime:
    moment = moment.astimezone(UTC).replace(second=0, microsecond=0)
    if period in ("hour", "day"):
        moment = moment.replace(minute=0)
    if period == "day":
        moment = moment.replace(hour=0)
    return moment


def percentile(counts: list[int], fraction: float) -> float | None:
    """The latency (ms) under which `fraction` of the calls fell, from the histogram's bucket counts."""
    total = sum(counts)
    if not total:
        return None
    wanted = fraction * total
    seen = 0
    for index, count in enumerate(counts):
        if count and seen + count >= wanted:
            low = LATENCY_EDGES_MS[index - 1] if index else 0.0
            if index >= len(LATENCY_EDGES_MS):
                return float(low)  # past the last edge: at least this
            return low + (LATENCY_EDGES_MS[index] - low) * (wanted - seen) / count
        seen += count
    return float(LATENCY_EDGES_MS[-1])


def percentiles(counts: list[int]) -> dict:
    return {name: percentile(counts, q) for name, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))}


def _sums(*names):
    return {name: Sum(name) for name in names}


def compute(start: datetime, end: datetime, spend_by: str = "key") -> Figures:
    period, step = step_for(start, end)
    first = floor(start, period)
    figures = Figures(start=first, end=end, period=period, step=step)
    figures.spend_by = spend_by if spend_by in SPEND_DIMENSIONS else "key"
    rows = UsageRollup.objects.filter(period=period, start__gte=first, start__lt=end).order_by()
    everything = rows.filter(dimension="all")

    # One pass for the series, the latency histogram and the token totals (by step and class) ...
    sums = (
        "calls",
        "prompt_tokens",
        "completion_tokens",
        "total_tokens",
        "latency_sum_ms",
        "cost_picos",
        "unpriced",
        *LATENCY_BUCKETS,
    )
    per_class: dict = {}
    per_step: dict = {}
    histogram = [0] * len(LATENCY_BUCKETS)
    names = ("prompt_tokens", "completion_tokens", "total_tokens", "latency_sum_ms", "cost_picos", "unpriced")
    totals = dict.fromkeys(names, 0)
    for item in everything.values("start", "status_class").annotate(**_sums(*sums)):
        per_class.setdefault(item["start"], {})[item["status_class"]] = item["calls"]
        counts = [item[name] or 0 for name in LATENCY_BUCKETS]
        step_counts = per_step.setdefault(item["start"], [0] * len(LATENCY_BUCKETS))
        for index, count in enumerate(counts):
            step_counts[index] += count
            histogram[index] += count
        for name in totals:
            totals[name] += item[name] or 0
    moment = first
    while moment < end:
        figures.series.append((moment, per_class.get(moment, {})))
        moment += step
    figures.calls = sum(sum(classes.values()) for classes in per_class.values())
    figures.failed = sum(n for classes in per_class.values() for c, n in classes.items() if c in (4, 5, 0))
    if not figures.calls:
        return figures
    figures.latency = percentiles(histogram)
    figures.latency_mean = totals["latency_sum_ms"] / figures.calls
    figures.latency_series = [(m, percentiles(per_step[m])) for m, _ in figures.series if m in per_step]
    figures.tokens = {name: totals[name] for name in ("prompt_tokens", "completion_tokens", "total_tokens")}
    figures.spend, figures.unpriced = from_picos(totals["cost_picos"]), totals["unpriced"]

    # ... and one per ranking (keys ranked three times: by tokens, by calls and by spend).
    ranking_rows = coarsest_rows(period, first, end)
    for dimension in SPEND_DIMENSIONS:
        ranked = [
            dict(item, name=item["value"], spent=from_picos(item["cost_picos"] or 0))
            for item in ranking_rows.filter(dimension=dimension)
            .values("value")
            .annotate(**_sums("calls", "total_tokens", "errors", "cost_picos", "unpriced"))
        ]
        if dimension == "key":
            ranked = by_key_identity(ranked)
        setattr(
            figures, f"by_{dimension}", sorted(ranked, key=lambda i: (-(i["total_tokens"] or 0), -i["calls"]))[:TOP]
        )
        if dimension == "key":
            figures.top_keys = sorted(ranked, key=lambda i: -i["calls"])[:TOP]
        spenders = [item for item in ranked if item["cost_picos"]]
        figures.spenders[dimension] = sorted(spenders, key=lambda i: (-i["cost_picos"], -i["calls"]))[:TOP]
    spend_series(figures, rows)
    return figures


def spend_series(figures: Figures, rows) -> None:
    """Spend per step split by one dimension: the range's biggest spenders each (figures.spend_values,
    in the order of figures.spenders), the rest summed last as others. A key's rows under several
    values (before and after keys were summed by id) are one key."""
    named = figures.spenders[figures.spend_by][:SERIES_VALUES]
    if not named:
        return
    found = list(
        rows.filter(dimension=figures.spend_by, cost_picos__gt=0)
        .values("start", "value")
        .annotate(picos=Sum("cost_picos"))
    )
    if figures.spend_by == "key":
        by_prefix = prefixes_of({item["value"] for item in found})
        wanted = {item["key_id"] or item["value"]: index for index, item in enumerate(named)}

        def identity(value):
            return key_id_of(value, by_prefix) or value
    else:
        wanted = {item["value"]: index for index, item in enumerate(named)}

        def identity(value):
            return value

    per_step: dict = {}
    for item in found:
        step = per_step.setdefault(item["start"], [0] * (len(named) + 1))
        step[wanted.get(identity(item["value"]), len(named))] += item["picos"]
    figures.spend_values = named
    figures.spend_others = any(step[-1] for step in per_step.values())
    empty = [0] * (len(named) + 1)
    figures.spend_series = [(moment, per_step.get(moment, empty)) for moment, _ in figures.series]


def coarsest_rows(period: str, first: datetime, end: datetime):
    """The rollup rows that sum to [first, end) with the fewest rows: read by the hour, its whole
    days from the daily rollups and the hours before the first midnight and from the last one
    from the hourly ones (both are written together for every call, so the sums are the same)."""
    rows = UsageRollup.objects.order_by()
    whole_days_from = floor(first, "day")
    if whole_days_from < first:
        whole_days_from += timedelta(days=1)
    whole_days_until = floor(end, "day")
    if period != "hour" or whole_days_until <= whole_days_from:
        return rows.filter(period=period, start__gte=first, start__lt=end)
    return rows.filter(
        Q(period="day", start__gte=whole_days_from, start__lt=whole_days_until)
        | Q(period="hour", start__gte=first, start__lt=whole_days_from)
        | Q(period="hour", start__gte=whole_days_until, start__lt=end)
    )


def key_id_of(value: str, by_prefix: dict) -> int | None:
    """The key a rollup value names: "#<id>", or (rows summed before keys were kept by id) a
    prefix the key has now or had before its last rotation."""
    if value.startswith("#") and value[1:].isdigit():
        return int(value[1:])
    return by_prefix.get(value)


def prefixes_of(values) -> dict:
    """prefix -> key id, for the rollup values that are prefixes (rows summed before keys were
    kept by id), by the key's prefix now or before its last rotation."""
    prefixes = {value for value in values if value and not value.startswith("#")}
    by_prefix: dict = {}
    if prefixes:
        known = APIKey.objects.filter(Q(prefix__in=prefixes) | Q(previous_prefix__in=prefixes))
        for key_id, prefix, previous in known.values_list("id", "prefix", "previous_prefix"):
            by_prefix[prefix] = key_id
            if previous:
                by_prefix[previous] = key_id
    return by_prefix


def by_key_identity(items: list[dict]) -> list[dict]:
    """One item per key, whatever prefixes its calls were made with (a rotation changes the
    prefix, not the key): each item gets `key_id` (None for calls without a known key)."""
    by_prefix = prefixes_of({item["value"] for item in items})
    merged: dict = {}
    for item in items:
        key_id = key_id_of(item["value"], by_prefix)
        identity = key_id or item["value"]
        if identity not in merged:
            merged[identity] = {**item, "key_id": key_id}
            continue
        for name in ("calls", "total_tokens", "errors", "cost_picos", "unpriced"):
            if name in item:
                merged[identity][name] = (merged[identity][name] or 0) + (item[name] or 0)
        if "cost_picos" in item:
            merged[identity]["spent"] = from_picos(merged[identity]["cost_picos"] or 0)
    return list(merged.values())
