"""The log summed afresh, independently of proxy/rollups.py, to compare with the rollups.

Importable from `cluster.shell(...)` too (the servers run from the repository's root).
"""

from collections import defaultdict
from datetime import UTC

from routes_admin.models import LATENCY_BUCKETS, LATENCY_EDGES_MS, RequestLog, UsageRollup
from routes_admin.pricing import to_picos

FIELDS = ("calls", "errors", "prompt_tokens", "completion_tokens", "total_tokens", "latency_sum_ms")
FIELDS += ("cost_picos", "unpriced")


def _start(period: str, created):
    created = created.astimezone(UTC)
    if period == "minute":
        return created.replace(second=0, microsecond=0)
    if period == "hour":
        return created.replace(minute=0, second=0, microsecond=0)
    return created.replace(hour=0, minute=0, second=0, microsecond=0)


def _bucket(latency_ms: float) -> str:
    for index, edge in enumerate(LATENCY_EDGES_MS):
        if latency_ms <= edge:
            return LATENCY_BUCKETS[index]
    return LATENCY_BUCKETS[-1]


def from_log() -> dict:
    """(period, dimension, start, value, status class) -> sums, computed row by row."""
    sums: dict = defaultdict(lambda: defaultdict(int))  # ints stay exact (costs in picos)
    for row in RequestLog.objects.all():
        dimensions = (
            ("all", ""),
            ("key", f"#{row.api_key_id}" if row.api_key_id else row.key_prefix),
            ("route", row.route_name),
            ("model", row.model),
            ("team", row.team_name),
        )
        for period in ("minute", "hour", "day"):
            for dimension, value in dimensions:
                group = sums[(period, dimension, _start(period, row.created), value, row.status // 100)]
                group["calls"] += 1
                group["errors"] += 1 if row.error_type else 0
                group["prompt_tokens"] += row.prompt_tokens or 0
                group["completion_tokens"] += row.completion_tokens or 0
                group["total_tokens"] += row.total_tokens or 0
                group["latency_sum_ms"] += row.latency_ms
                group["cost_picos"] += to_picos(row.cost)
                group["unpriced"] += 1 if row.cost is None and (row.model or row.upstream_model) else 0
                group[_bucket(row.latency_ms)] += 1
    return {group: _rounded(values) for group, values in sums.items()}


def from_rollups() -> dict:
    result = {}
    for rollup in UsageRollup.objects.all():
        group = (rollup.period, rollup.dimension, rollup.start.astimezone(UTC), rollup.value, rollup.status_class)
        values = {name: getattr(rollup, name) for name in FIELDS + LATENCY_BUCKETS}
        result[group] = _rounded(values)
    return result


def _rounded(values: dict) -> dict:
    return {name: round(value, 3) for name, value in values.items() if value}


def mismatches() -> list:
    """Groups where the rollups and the log disagree (empty when they are equal)."""
    log, rollups = from_log(), from_rollups()
    return [
        (group, log.get(group), rollups.get(group))
        for group in sorted(set(log) | set(rollups), key=str)
        if log.get(group) != rollups.get(group)
    ]
