"""`make bench-console`: the console's server time on a log of millions of calls.

Fills a database of its own with synthetic calls spread over the last 30 days and their rollups
(200 keys, a few of them busy, 160 of them in 20 teams; 8 routes; 12 models; 90 % answered and
priced, 4 % refused by a limit, the rest failures or 401/404),
then times, in this process through Django's test client (server time: view, queries and
template; no network) every log page a role can open: the dashboard (24 hours, 7 days, 30 days),
filtered explorer pages and a later page, a call's page, the first byte of an export, the admin's
request-log list (filtered, searched) and row page, and the management API's log list (filtered,
a later page, a call); prints whether each is under GOAL_MS; and measures the export's memory (tracemalloc peak) for a
small and a ten times larger set, which should be the same (streamed row by row).

Environment: DATABASE_URL (PostgreSQL: a database named <its name>_console_bench is created next to
it, and dropped unless BENCH_CONSOLE_KEEP=1; unset: a SQLite file in bench/results/),
BENCH_CONSOLE_ROWS (comma-separated sizes, default 1000000; each size starts from an empty log),
BENCH_CONSOLE_REPEATS (timed runs per page after one warm-up, default 5; the table shows the median),
BENCH_CONSOLE_REUSE=1 (with BENCH_CONSOLE_KEEP=1 before: time a kept database again, no new fill),
BENCH_CONSOLE_PYTHON_FILL=1 (on PostgreSQL too, fill through COPY and proxy/rollups.py, as
the gateway sums its rows, instead of generating the rows and their rollups in SQL: about 10x slower).
On SQLite the rows are inserted in batches and the rollups written by proxy/rollups.py.
"""

import json
import os
import random
import statistics
import sys
import time
import tracemalloc
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "results"
SIZES = [int(n) for n in os.environ.get("BENCH_CONSOLE_ROWS", "1000000").split(",")]
REPEATS = int(os.environ.get("BENCH_CONSOLE_REPEATS", "5"))
KEEP = os.environ.get("BENCH_CONSOLE_KEEP") == "1"
REUSE = os.environ.get("BENCH_CONSOLE_REUSE") == "1"
PYTHON_FILL = os.environ.get("BENCH_CONSOLE_PYTHON_FILL") == "1"  # PostgreSQL too through the gateway's writer
DAYS = 30
KEYS, ROUTES, MODELS, TEAMS = 200, 8, 12, 20
TEAM_KEYS = 160  # keys 0-159 are in team-(i % TEAMS); the others, the least busy, in none
GOAL_MS = 300  # the goal for every log page at 1,000,000 calls on PostgreSQL (docs/benchmarks.md)
CHUNK = 20_000
# status, error type, limit, share of calls
OUTCOMES = [
    (200, "", "", 0.90),
    (429, "rate_limit_exceeded", "requests_per_minute", 0.04),
    (401, "invalid_api_key", "", 0.02),
    (502, "upstream_unavailable", "", 0.02),
    (504, "upstream_timeout", "", 0.01),
    (404, "not_found", "", 0.01),
]


def database_url() -> tuple[str, str | None]:
    """The bench's own database URL, and the PostgreSQL admin URL to create and drop it."""
    base = os.environ.get("DATABASE_URL", "")
    if base.startswith("postgres"):
        parts = urlsplit(base)
        name = f"{parts.path.lstrip('/') or 'gateway'}_console_bench"
        return urlunsplit(parts._replace(path=f"/{name}")), urlunsplit(parts._replace(path="/postgres"))
    RESULTS.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{RESULTS / 'console-bench.sqlite3'}", None


def recreate(url: str, admin_url: str | None) -> None:
    if admin_url:
        import psycopg

        name = urlsplit(url).path.lstrip("/")
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
    else:
        Path(urlsplit(url).path).unlink(missing_ok=True)


def setup_django(url: str) -> None:
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("SECRET_KEY", "bench-console-only")
    os.environ["DJANGO_SETTINGS_MODULE"] = "gateway_project.settings"
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    import django

    django.setup()
    from django.test.utils import setup_test_environment

    setup_test_environment()  # the test client's host is allowed


def synthetic_rows(count: int, keys: list, routes: list, rng: random.Random):
    """Row dicts as proxy/recording.py makes them, in time order over the last DAYS days."""
    end = datetime.now(UTC)
    start = end - timedelta(days=DAYS)
    step = (end - start) / count
    models = [f"model-{i}" for i in range(MODELS)]
    weights = [share for *_, share in OUTCOMES]
    for i in range(count):
        key_id, prefix, team = keys[int(rng.paretovariate(1.2)) % len(keys)]
        route_id, route_name = routes[i % len(routes)]
        status, error_type, limit, _ = rng.choices(OUTCOMES, weights)[0]
        latency = rng.lognormvariate(5.5, 0.8)
        answered = status == 200
        attempts = [{"target": f"{route_name}-a", "status": status if answered else None, "error": "", "ms": latency}]
        detail = {"match": f"route {route_name}: prefix /v1, model", "attempts": attempts} if answered else {}
        if status == 429:
            detail = {"quota": {"name": limit, "limit": 60, "used": 61, "reset": rng.randint(1, 59)}}
        prompt = rng.randint(10, 900) if answered else None
        completion = rng.randint(1, 400) if answered else None
        yield {
            "created": start + step * i,
            "request_id": f"bench-{i}",
            "api_key_id": key_id,
            "key_prefix": prefix,
            "route_id": route_id,
            "route_name": route_name,
            "method": "POST",
            "path": "/v1/chat/completions",
            "model": models[(i * 7 + key_id) % MODELS],
            "upstream_model": "",
            "status": status,
            "latency_ms": round(latency, 3),
            "upstream_ms": round(latency * 0.9, 3) if answered else None,
            "target": f"{route_name}-a" if answered else "",
            "targets_tried": [f"{route_name}-a"] if answered else [],
            "attempts": 1 if answered else 0,
            "fallback_from": "",
            "streamed": False,
            "bytes_in": 180,
            "bytes_out": 900 if answered else 120,
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion if answered else None,
            "usage_estimated": False,
            "error_type": error_type,
            "limit": limit,
            "client_ip": "10.0.0.1",
            "detail": detail,
            "job_id": None,
            "queue_ms": None,
            "cost": price(prompt, completion) if answered else None,
            "team_name": team,
        }


def price(prompt: int, completion: int) -> Decimal:
    """$1 per million prompt tokens, $2 per million completion tokens (fill_in_sql prices the same)."""
    return (Decimal(prompt) * Decimal("0.000001") + Decimal(completion) * Decimal("0.000002")).quantize(
        Decimal(1).scaleb(-12)
    )


def insert(rows: list) -> None:
    from django.db import connection

    from proxy import recording
    from routes_admin.models import RequestLog

    table = connection.ops.quote_name(RequestLog._meta.db_table)
    columns = recording.COLUMNS
    names = ", ".join(connection.ops.quote_name(RequestLog._meta.get_field(c).column) for c in columns)
    json_columns = {f.attname for f in RequestLog._meta.concrete_fields if f.get_internal_type() == "JSONField"}
    # Columns the synthetic rows leave out (added to the log since) get their field's default.
    defaults = {c: RequestLog._meta.get_field(c).get_default() for c in columns}
    rows = [{**defaults, **row} for row in rows]
    if connection.vendor == "postgresql":
        # COPY: the fastest way in for millions of rows (the gateway writes its batches in one statement).
        with connection.cursor() as cursor, cursor.cursor.copy(f"COPY {table} ({names}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row([json.dumps(row[c]) if c in json_columns else row[c] for c in columns])
        return
    sql = f"INSERT INTO {table} ({names}) VALUES ({', '.join(['%s'] * len(columns))})"
    adapt = connection.ops.adapt_datetimefield_value
    with connection.cursor() as cursor:
        cursor.executemany(
            sql,
            [
                [
                    adapt(row[c]) if c == "created" else json.dumps(row[c]) if c in json_columns else row[c]
                    for c in columns
                ]
                for row in rows
            ],
        )


def fill_in_sql(count: int, keys: list, routes: list) -> None:
    """PostgreSQL: the same distribution made by the database itself (generate_series), and the
    rollups summed from it in one INSERT ... SELECT: minutes instead of hours at 10 million rows.
    tests/proxy/test_rollups.py holds the gateway's own rollup writer to the same sums."""
    from django.db import connection

    from routes_admin.models import LATENCY_BUCKETS, LATENCY_EDGES_MS

    key_ids = "(ARRAY[" + ",".join(str(i) for i, _, _ in keys) + "])"
    prefixes = "(ARRAY[" + ",".join(f"'{p}'" for _, p, _ in keys) + "])"
    teams = "(ARRAY[" + ",".join(f"'{t}'" for _, _, t in keys) + "])"
    route_ids = "(ARRAY[" + ",".join(str(i) for i, _ in routes) + "])"
    route_names = "(ARRAY[" + ",".join(f"'{n}'" for _, n in routes) + "])"
    statuses = "CASE WHEN r2 < .90 THEN 200 WHEN r2 < .94 THEN 429 WHEN r2 < .96 THEN 401 WHEN r2 < .98 THEN 502 WHEN r2 < .99 THEN 504 ELSE 404 END"
    log_sql = f"""
    INSERT INTO routes_admin_requestlog (created, request_id, api_key_id, key_prefix, route_id, route_name,
        method, path, model, upstream_model, status, latency_ms, upstream_ms, target, targets_tried, attempts,
        fallback_from, streamed, bytes_in, bytes_out, prompt_tokens, completion_tokens, total_tokens,
        usage_estimated, error_type, "limit", client_ip, detail, cost, team_name)
    SELECT created, 'bench-' || g, {key_ids}[k], {prefixes}[k], {route_ids}[rt], {route_names}[rt],
        'POST', '/v1/chat/completions', 'model-' || ((g * 7 + {key_ids}[k]) % {MODELS}), '', status,
        round(latency::numeric, 3), CASE WHEN status = 200 THEN round((latency * 0.9)::numeric, 3) END,
        CASE WHEN status = 200 THEN {route_names}[rt] || '-a' ELSE '' END,
        CASE WHEN status = 200 THEN jsonb_build_array({route_names}[rt] || '-a') ELSE '[]'::jsonb END,
        (status = 200)::int, '', false, 180, CASE WHEN status = 200 THEN 900 ELSE 120 END,
        CASE WHEN status = 200 THEN p END, CASE WHEN status = 200 THEN c END,
        CASE WHEN status = 200 THEN p + c END, false,
        CASE status WHEN 429 THEN 'rate_limit_exceeded' WHEN 401 THEN 'invalid_api_key'
            WHEN 502 THEN 'upstream_unavailable' WHEN 504 THEN 'upstream_timeout' WHEN 404 THEN 'not_found' ELSE '' END,
        CASE WHEN status = 429 THEN 'requests_per_minute' ELSE '' END, '10.0.0.1',
        CASE status
            WHEN 200 THEN jsonb_build_object('match', 'route ' || {route_names}[rt] || ': prefix /v1, model',
                'attempts', jsonb_build_array(jsonb_build_object('target', {route_names}[rt] || '-a',
                'status', 200, 'error', '', 'ms', round(latency::numeric, 1))))
            WHEN 429 THEN jsonb_build_object('quota', jsonb_build_object('name', 'requests_per_minute',
                'limit', 60, 'used', 61, 'reset', 1 + (g % 59)))
            ELSE '{{}}'::jsonb END,
        CASE WHEN status = 200 THEN round(p * 0.000001 + c * 0.000002, 12) END, {teams}[k]
    FROM (
        SELECT g, now() - interval '{DAYS} days' + g * interval '{DAYS * 86400 / count:.9f} seconds' AS created,
            1 + (least(floor(1 / power(1 - r1 * 0.999, 1 / 1.2))::bigint, 100000) % {KEYS}) AS k,
            1 + g % {ROUTES} AS rt, {statuses} AS status,
            exp(5.5 + 0.8 * sqrt(-2 * ln(1 - r3)) * cos(2 * pi() * r4)) AS latency,
            10 + (r3 * 890)::int AS p, 1 + (r4 * 399)::int AS c
        FROM (SELECT g, random() r1, random() r2, random() r3, random() r4
              FROM generate_series(%s, %s) g) numbers
    ) rows
    """.replace(" % ", " %% ")  # noqa: S608  (numbers and names made here, no input; %% for psycopg)
    edges = (0, *LATENCY_EDGES_MS)
    buckets = [
        f"count(*) FILTER (WHERE {f'latency_ms > {low} AND ' if low else ''}latency_ms <= {high})"
        for low, high in zip(edges, edges[1:], strict=False)
    ] + [f"count(*) FILTER (WHERE latency_ms > {LATENCY_EDGES_MS[-1]})"]
    rollup_sql = f"""
    INSERT INTO routes_admin_usagerollup (period, dimension, start, value, status_class, calls, errors,
        prompt_tokens, completion_tokens, total_tokens, latency_sum_ms, cost_picos, unpriced,
        {", ".join(LATENCY_BUCKETS)})
    SELECT period, dimension, date_trunc(period, created AT TIME ZONE 'UTC') AT TIME ZONE 'UTC',
        CASE dimension WHEN 'key' THEN coalesce('#' || api_key_id, key_prefix) WHEN 'route' THEN route_name
            WHEN 'model' THEN model WHEN 'team' THEN team_name ELSE '' END,
        status / 100, count(*), count(*) FILTER (WHERE error_type <> ''), coalesce(sum(prompt_tokens), 0),
        coalesce(sum(completion_tokens), 0), coalesce(sum(total_tokens), 0), sum(latency_ms),
        coalesce(sum((cost * 1000000000000)::bigint), 0),
        count(*) FILTER (WHERE cost IS NULL AND (model <> '' OR upstream_model <> '')), {", ".join(buckets)}
    FROM routes_admin_requestlog
    CROSS JOIN (VALUES ('minute'), ('hour'), ('day')) AS periods(period)
    CROSS JOIN (VALUES ('all'), ('key'), ('route'), ('model'), ('team')) AS dimensions(dimension)
    GROUP BY 1, 2, 3, 4, 5
    """  # noqa: S608
    with connection.cursor() as cursor:
        for low in range(0, count, 1_000_000):
            cursor.execute(log_sql, [low, min(count, low + 1_000_000) - 1])
        cursor.execute(rollup_sql)


def fill(count: int) -> dict:
    from django.contrib.auth.models import User
    from django.db import connection, transaction

    from proxy import rollups
    from routes_admin.models import APIKey, Route, Team

    rng = random.Random(12)
    routes = [(Route.objects.create(name=f"route-{i}", path_prefix=f"/r{i}").id, f"route-{i}") for i in range(ROUTES)]
    teams = [Team.objects.create(name=f"team-{i}") for i in range(TEAMS)]
    keys = []
    for i in range(KEYS):
        team = teams[i % TEAMS] if i < TEAM_KEYS else None
        key, _ = APIKey.objects.issue(name=f"key-{i}", owner=f"owner-{i % 20}", all_routes=True, team=team)
        keys.append((key.id, key.prefix, team.name if team else ""))
    User.objects.create_superuser("bench", password="bench")
    started = time.perf_counter()
    if connection.vendor == "postgresql" and not PYTHON_FILL:
        fill_in_sql(count, keys, routes)
        analyze()
        return {"fill_seconds": time.perf_counter() - started, "key": "key-1", "route": routes[3][1]}
    chunk = []
    for row in synthetic_rows(count, keys, routes, rng):
        chunk.append(row)
        if len(chunk) == CHUNK:
            with transaction.atomic():
                insert(chunk)
                rollups.add(chunk)
            chunk = []
    if chunk:
        with transaction.atomic():
            insert(chunk)
            rollups.add(chunk)
    seconds = time.perf_counter() - started
    analyze()
    return {"fill_seconds": seconds, "key": "key-1", "route": routes[3][1]}  # key-1: the busiest


def analyze() -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")


def timed(client, url: str) -> float:
    """Median server time (ms) of a page, after one warm-up."""
    client.get(url)
    times = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        response = client.get(url)
        if response.streaming:
            next(iter(response.streaming_content))  # the first byte of an export
        times.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, (url, response.status_code)
        if response.streaming:
            response.close()
    return statistics.median(times)


def export_peak(client, query: str) -> tuple[int, float]:
    """Rows exported and the peak of Python allocations while streaming them all (KB)."""
    tracemalloc.start()
    response = client.get(f"/console/calls/export.csv?{query}")
    lines = 0
    for chunk in response.streaming_content:
        lines += chunk.count(b"\n")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    response.close()
    return lines - 1, peak / 1024


def measure(facts: dict) -> tuple:
    from django.test import Client
    from django.utils import timezone

    from routes_admin.models import RequestLog

    client = Client()
    from django.contrib.auth.models import User

    client.force_login(User.objects.get(username="bench"))  # django-axes wants a request to log in
    now = timezone.now()
    day_ago = (now - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M")
    ten_days_ago = (now - timedelta(days=10)).strftime("%Y-%m-%dT%H:%M")
    some_row = RequestLog.objects.filter(status=429).order_by("-id").values_list("pk", flat=True)[500]
    explorer_next = "/console/calls/?" + client.get("/console/calls/?status=4xx").context["next_query"]
    api_next = client.get("/api/logs/?status=4xx").json()["next"]
    pages = [
        ("dashboard, 24 hours", "/console/?range=24h"),
        ("dashboard, 7 days", "/console/?range=7d"),
        ("dashboard, 30 days", f"/console/?range=custom&start={(now - timedelta(days=30)).strftime('%Y-%m-%dT%H:%M')}&end={now.strftime('%Y-%m-%dT%H:%M')}"),
        ("explorer, no filter", "/console/calls/"),
        ("explorer, key + status 5xx", f"/console/calls/?key={facts['key']}&status=5xx"),
        ("explorer, model + min latency 1 s", "/console/calls/?model=model-3&min_latency=1000"),
        ("explorer, route + last day", f"/console/calls/?route_name={facts['route']}&created_after={day_ago}"),
        ("explorer, request id", "/console/calls/?request_id=bench-12345"),
        ("explorer, limit", "/console/calls/?limit=requests_per_minute"),
        ("explorer, error type", "/console/calls/?error_type=upstream_timeout"),
        ("explorer, busy team", "/console/calls/?team=team-1"),
        ("explorer, quiet team", f"/console/calls/?team=team-{TEAMS - 1}"),
        ("explorer, team with no calls", "/console/calls/?team=new-team"),
        ("explorer, min cost", "/console/calls/?min_cost=0.0015"),
        ("explorer, min cost no call reached", "/console/calls/?min_cost=1"),
        ("explorer, method no call used", "/console/calls/?method=DELETE"),
        ("explorer, status 4xx, next page", explorer_next),
        ("call page", f"/console/calls/{some_row}/"),
        ("export CSV, first byte", f"/console/calls/export.csv?route_name={facts['route']}"),
        ("admin log list, no filter", "/admin/routes_admin/requestlog/"),
        ("admin log list, 5xx + last 24 hours", "/admin/routes_admin/requestlog/?status=5xx&within=24h"),
        ("admin log list, error type", "/admin/routes_admin/requestlog/?error_type=upstream_timeout"),
        ("admin log list, route", f"/admin/routes_admin/requestlog/?route_name={facts['route']}"),
        ("admin log list, request id search", "/admin/routes_admin/requestlog/?q=bench-12345"),
        ("admin log list, page 50", "/admin/routes_admin/requestlog/?p=50"),
        ("admin log row", f"/admin/routes_admin/requestlog/{some_row}/change/"),
        ("API log list, no filter", "/api/logs/"),
        ("API log list, key + status 5xx", f"/api/logs/?key={facts['key']}&status=5xx"),
        ("API log list, route + last day", f"/api/logs/?route_name={facts['route']}&created_after={day_ago}"),
        ("API log list, model + min latency 1 s", "/api/logs/?model=model-3&min_latency=1000"),
        ("API log list, error type", "/api/logs/?error_type=upstream_timeout"),
        ("API log list, request id", "/api/logs/?request_id=bench-12345"),
        ("API log list, busy team", "/api/logs/?team=team-1"),
        ("API log list, quiet team", f"/api/logs/?team=team-{TEAMS - 1}"),
        ("API log list, team with no calls", "/api/logs/?team=new-team"),
        ("API log list, min cost", "/api/logs/?min_cost=0.0015"),
        ("API log list, min cost no call reached", "/api/logs/?min_cost=1"),
        ("API log list, status 4xx, next page", api_next),
        ("API log call", f"/api/logs/{some_row}/"),
    ]  # fmt: skip
    table = [(name, timed(client, url)) for name, url in pages]
    small = export_peak(client, f"route_name={facts['route']}&created_after={day_ago}")
    large = export_peak(client, f"route_name={facts['route']}&created_after={ten_days_ago}")
    return table, small, large


def main() -> None:
    url, admin_url = database_url()
    if not REUSE:
        recreate(url, admin_url)
    setup_django(url)
    from django.core.management import call_command
    from django.db import connection

    from routes_admin.models import UsageRollup

    out = []
    for count in SIZES:
        connection.close()
        if REUSE:
            call_command("migrate", "--noinput", verbosity=0)
            facts = {"fill_seconds": 0, "key": "key-1", "route": "route-3"}  # as fill() made them
        else:
            recreate(url, admin_url)  # each size from an empty database
            call_command("migrate", "--noinput", verbosity=0)
            facts = fill(count)
        rollup_rows = UsageRollup.objects.count()
        table, small, large = measure(facts)
        out.append(
            f"\n{count:,} calls over {DAYS} days on {connection.vendor} "
            f"({rollup_rows:,} rollup rows; filled in {facts['fill_seconds']:.0f} s)"
        )
        out.append(f"{'page':<38} server time, median of {REPEATS}")
        out += [f"{name:<38} {ms:>10.1f} ms{'' if ms < GOAL_MS else f'   over {GOAL_MS} ms'}" for name, ms in table]
        out.append(
            f"export memory: {small[0]:,} rows: peak {small[1]:,.0f} KB; {large[0]:,} rows: peak {large[1]:,.0f} KB"
        )
        print(out[-len(table) - 3 :] and "\n".join(out[-len(table) - 3 :]), flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (RESULTS / f"console-{connection.vendor}-{stamp}.txt").write_text("\n".join(out) + "\n")
    connection.close()
    if admin_url and not KEEP:
        recreate_drop(url, admin_url)


def recreate_drop(url: str, admin_url: str) -> None:
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{urlsplit(url).path.lstrip("/")}" WITH (FORCE)')


if __name__ == "__main__":
    main()
