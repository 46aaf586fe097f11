"""Usage rollups: the log rows of a batch summed per minute, hour and day (UTC) and status class,
for all calls and by key, by route and by model; written with the rows.

The recorder writes a batch's rows and its sums together or not at all (recording._save: in one
statement on PostgreSQL, `upserts(rows)` its last part; `add(rows)` in its transaction on SQLite):
for every period the log still holds, the rollups equal it.
The batch is summed in Python first, then each distinct group is one upsert that adds to what is
there (`INSERT ... ON CONFLICT DO UPDATE SET x = x + EXCLUDED.x`, on SQLite and PostgreSQL alike);
Django's bulk_create(update_conflicts=True) can only overwrite, not add.
"""

from bisect import bisect_left
from datetime import UTC
from itertools import product

from django.db import connection

from routes_admin.models import LATENCY_BUCKETS, LATENCY_EDGES_MS, UsageRollup
from routes_admin.pricing import to_picos

GROUP = ("period", "dimension", "start", "value", "status_class")
SUMS = (
    "calls",
    "errors",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "latency_sum_ms",
    "cost_picos",
    "unpriced",
    *LATENCY_BUCKETS,
)
FIRST_BUCKET = SUMS.index(LATENCY_BUCKETS[0])
GROUPS_PER_STATEMENT = 500  # 2 parameters a group: well under SQLite's limit (999 before 3.32)
GROUPS_PER_POSTGRESQL_STATEMENT = 10_000  # PostgreSQL takes 65,535 parameters: a whole batch's groups at once

_statements: dict = {}


def periods(created) -> tuple:
    """The (period, start) pairs a call made at `created` counts in."""
    minute = created.astimezone(UTC).replace(second=0, microsecond=0)
    hour = minute.replace(minute=0)
    return (("minute", minute), ("hour", hour), ("day", hour.replace(hour=0)))


def key_value(key_id: int | None, prefix: str) -> str:
    """A key's rollup value: "#<id>", so its figures stay one key across rotations (its prefix
    changes); a call with no key has "". Rows summed before keys were kept by id hold the prefix
    (console/figures.py reads both)."""
    return f"#{key_id}" if key_id else prefix


def aggregate(rows) -> dict:
    """Log rows (as recording makes them) -> {group tuple: list of sums in SUMS order}."""
    groups: dict = {}
    for row in rows:
        status_class = row["status"] // 100
        values = (
            ("all", ""),
            ("key", key_value(row.get("api_key_id"), row["key_prefix"])),
            ("route", row["route_name"]),
            ("model", row["model"]),
            ("team", row.get("team_name", "")),
        )
        latency = row["latency_ms"]
        cost = row.get("cost")  # .get: rows made by hand (bench/console.py) may leave the cost out
        picos = to_picos(cost)
        unpriced = 1 if cost is None and (row["model"] or row.get("upstream_model")) else 0
        bucket = FIRST_BUCKET + bisect_left(LATENCY_EDGES_MS, latency)
        for (period, start), (dimension, value) in product(periods(row["created"]), values):
            group = (period, dimension, start, value, status_class)
            sums = groups.get(group)
            if sums is None:
                sums = groups[group] = [0] * len(SUMS)
            sums[0] += 1
            if row["error_type"]:
                sums[1] += 1
            sums[2] += row["prompt_tokens"] or 0
            sums[3] += row["completion_tokens"] or 0
            sums[4] += row["total_tokens"] or 0
            sums[5] += latency
            sums[6] += picos
            sums[7] += unpriced
            sums[bucket] += 1
    return groups


def add(rows) -> None:
    """Add a batch of log rows to the rollups. Call it in the transaction that inserts the rows."""
    with connection.cursor() as cursor:
        for sql, params in upserts(rows):
            cursor.execute(sql, params)


def upserts(rows) -> list[tuple[str, list]]:
    """The statements that add a batch of log rows to the rollups, as (sql, params): one unless the
    batch has more groups than a statement takes (proxy/recording.py makes the first part of the
    statement that writes the rows)."""
    groups = aggregate(rows)
    if not groups:
        return []
    adapt = connection.ops.adapt_datetimefield_value
    head, tail = _statement()
    per_statement = GROUPS_PER_STATEMENT if connection.vendor == "sqlite" else GROUPS_PER_POSTGRESQL_STATEMENT
    # Sorted, so two writers upserting the same groups lock them in the same order (no deadlock).
    items = sorted(groups.items())
    statements = []
    for at in range(0, len(items), per_statement):
        values, params = [], []
        for (period, dimension, start, value, status_class), sums in items[at : at + per_statement]:
            # Only the start and the value (a model name comes from the client) are parameters; the
            # period, dimension and sums are the gateway's own words and numbers, written inline:
            # binding 41 parameters a group cost more CPU than the rest of the write.
            values.append(f"('{period}', '{dimension}', %s, %s, {status_class:d}, {', '.join(map(repr, sums))})")
            params += [adapt(start), value]
        statements.append((head + ", ".join(values) + tail, params))
    return statements


def _statement() -> tuple[str, str]:
    """INSERT ... VALUES and ON CONFLICT ... DO UPDATE, the rows to go between them."""
    if connection.vendor in _statements:
        return _statements[connection.vendor]
    quote = connection.ops.quote_name
    table = quote(UsageRollup._meta.db_table)
    columns = [quote(UsageRollup._meta.get_field(name).column) for name in GROUP + SUMS]
    updates = ", ".join(f"{c} = {table}.{c} + EXCLUDED.{c}" for c in columns[len(GROUP) :])
    head = f"INSERT INTO {table} ({', '.join(columns)}) VALUES "
    tail = f" ON CONFLICT ({', '.join(columns[: len(GROUP)])}) DO UPDATE SET {updates}"
    _statements[connection.vendor] = head, tail
    return head, tail
