"""`make bench-console`: the console's server time on a log of millions of calls.

Fills a database of its own with synthetic calls spread over the last 30 days (COPY on PostgreSQL,
batched inserts on SQLite) and their rollups (written by proxy/rollups.py, as the gateway does),
then times, in this process through Django's test client (server time: view, queries and
template; no network): the dashboard (24 hours, 7 days, 30 days), filtered explorer pages, a call's
page and the first byte of an export; and measures the export's memory (tracemalloc peak) for a
small and a ten times larger set, which should be the same (streamed row by row).

Environment: DATABASE_URL (PostgreSQL: a database named <its name>_console_bench is created next to
it, and dropped unless BENCH_CONSOLE_KEEP=1; unset: a SQLite file in bench/results/),
BENCH_CONSOLE_ROWS (comma-separated sizes, default 1000000; each size starts from an empty log),
BENCH_CONSOLE_REPEATS (timed runs per page after one warm-up, default 5; the table shows the median).
"""

import json
import os
import random
import statistics
import sys
import time
import tracemalloc
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "results"
SIZES = [int(n) for n in os.environ.get("BENCH_CONSOLE_ROWS", "1000000").split(",")]
REPEATS = int(os.environ.get("BENCH_CONSOLE_REPEATS", "5"))
KEEP = os.environ.get("BENCH_CONSOLE_KEEP") == "1"
DAYS = 30
KEYS, ROUTES, MODELS = 200, 8, 12
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
        key_id, prefix = keys[int(rng.paretovariate(1.2)) % len(keys)]
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
            "error_type": error_type,
            "limit": limit,
            "client_ip": "10.0.0.1",
            "detail": detail,
        }


def insert(rows: list) -> None:
    from django.db import connection

    from proxy import recording

    if connection.vendor == "postgresql":
        recording._insert(rows)  # COPY, as the gateway writes
        return
    from routes_admin.models import RequestLog

    table = connection.ops.quote_name(RequestLog._meta.db_table)
    columns = recording.COLUMNS
    names = ", ".join(connection.ops.quote_name(RequestLog._meta.get_field(c).column) for c in columns)
    sql = f"INSERT INTO {table} ({names}) VALUES ({', '.join(['%s'] * len(columns))})"
    adapt = connection.ops.adapt_datetimefield_value
    with connection.cursor() as cursor:
        cursor.executemany(
            sql,
            [
                [
                    adapt(row[c]) if c == "created" else json.dumps(row[c]) if c in recording.JSON_COLUMNS else row[c]
                    for c in columns
                ]
                for row in rows
            ],
        )


def fill(count: int) -> dict:
    from django.contrib.auth.models import User
    from django.db import transaction

    from proxy import rollups
    from routes_admin.models import APIKey, Route

    rng = random.Random(12)
    routes = [(Route.objects.create(name=f"route-{i}", path_prefix=f"/r{i}").id, f"route-{i}") for i in range(ROUTES)]
    keys = []
    for i in range(KEYS):
        key, _ = APIKey.objects.issue(name=f"key-{i}", owner=f"team-{i % 20}", all_routes=True)
        keys.append((key.id, key.prefix))
    User.objects.create_superuser("bench", password="bench")
    started = time.perf_counter()
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
    client.login(username="bench", password="bench")
    now = timezone.now()
    day_ago = (now - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M")
    ten_days_ago = (now - timedelta(days=10)).strftime("%Y-%m-%dT%H:%M")
    some_row = RequestLog.objects.filter(status=429).order_by("-id").values_list("pk", flat=True)[500]
    pages = [
        ("dashboard, 24 hours", "/console/?range=24h"),
        ("dashboard, 7 days", "/console/?range=7d"),
        ("dashboard, 30 days", f"/console/?range=custom&start={(now - timedelta(days=30)).strftime('%Y-%m-%dT%H:%M')}&end={now.strftime('%Y-%m-%dT%H:%M')}"),
        ("explorer, no filter", "/console/calls/"),
        ("explorer, key + status 5xx", f"/console/calls/?key={facts['key']}&status=5xx"),
        ("explorer, model + min latency 1 s", "/console/calls/?model=model-3&min_latency=1000"),
        ("explorer, route + last day", f"/console/calls/?route={facts['route']}&start={day_ago}"),
        ("explorer, request id", "/console/calls/?request_id=bench-12345"),
        ("explorer, limit", "/console/calls/?limit=requests_per_minute"),
        ("call page", f"/console/calls/{some_row}/"),
        ("export CSV, first byte", f"/console/calls/export.csv?route={facts['route']}"),
    ]  # fmt: skip
    table = [(name, timed(client, url)) for name, url in pages]
    small = export_peak(client, f"route={facts['route']}&start={day_ago}")
    large = export_peak(client, f"route={facts['route']}&start={ten_days_ago}")
    return table, small, large


def main() -> None:
    url, admin_url = database_url()
    recreate(url, admin_url)
    setup_django(url)
    from django.core.management import call_command
    from django.db import connection

    from routes_admin.models import UsageRollup

    out = []
    for count in SIZES:
        connection.close()
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
        out += [f"{name:<38} {ms:>10.1f} ms" for name, ms in table]
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
