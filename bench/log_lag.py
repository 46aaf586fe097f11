"""How long log rows wait in a worker's memory under load: what a worker killed with SIGKILL loses.

Runs the gateway (production settings: batched log writes every GATEWAY_LOG_FLUSH_SECONDS) against
the demo component with LAG_CLIENTS clients calling without pause for LAG_SECONDS, then reads the
writer's own measure from /metrics: `gateway_log_write_lag_seconds`, per flush, how long its oldest
row waited in memory before it was written. Prints the flushes per lag bucket, and checks that
every answered call has its row.

Environment: DATABASE_URL / REDIS_URL (as `make bench`; PostgreSQL and Redis to measure what
production does), GATEWAY_WORKERS (default: one per core with Redis), LAG_CLIENTS (20),
LAG_SECONDS (30).
"""

import asyncio
import json
import os
import sys
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))

from loadgen import build_request, closed_loop  # noqa: E402
from stack import Stack  # noqa: E402

CLIENTS = int(os.environ.get("LAG_CLIENTS", "20"))
SECONDS = float(os.environ.get("LAG_SECONDS", "30"))
CHAT = json.dumps({"model": "demo-chat", "messages": [{"role": "user", "content": "How late is my row?"}]}).encode()


def lag_buckets(metrics_text: str) -> list[tuple[str, int]]:
    """(upper bound, flushes in that bucket) of gateway_log_write_lag_seconds, summed over the workers."""
    cumulative = []
    for line in metrics_text.splitlines():
        if line.startswith("gateway_log_write_lag_seconds_bucket"):
            bound = line.split('le="', 1)[1].split('"', 1)[0]
            cumulative.append((bound, int(float(line.rsplit(" ", 1)[1]))))
    return [(bound, count - (cumulative[i - 1][1] if i else 0)) for i, (bound, count) in enumerate(cumulative)]


def main() -> None:
    stack = Stack()
    try:
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {stack.secret}"}
        raw = build_request("POST", "/v1/chat/completions", f"127.0.0.1:{stack.gateway_port}", headers, CHAT)
        run = asyncio.run(closed_loop("127.0.0.1", stack.gateway_port, raw, CLIENTS, seconds=SECONDS))
        metrics = requests.get(f"http://127.0.0.1:{stack.gateway_port}/metrics", timeout=10).text
        rows = stack.wait_for_log_rows(len(run.ok))
        buckets = lag_buckets(metrics)
        flushes = sum(count for _, count in buckets)
        database = "PostgreSQL" if os.environ.get("DATABASE_URL", "").startswith("postgres") else "SQLite"
        print(
            f"{CLIENTS} clients for {SECONDS:g} s, {stack.workers} worker(s), {database}: "
            f"{len(run.ok)} calls answered ({run.rps:.0f}/s), {run.errors} errors, {rows} log rows"
        )
        print(f"{flushes} flushes; how long each flush's oldest row waited in memory:")
        below = 0
        for bound, count in buckets:
            below += count
            if count:
                print(f"  <= {bound:>5} s: {count:5d} flushes  ({100 * below / flushes:5.1f} % at most this)")
        if rows != len(run.ok):
            sys.exit(f"{len(run.ok)} calls answered but {rows} log rows")
    finally:
        stack.close()


if __name__ == "__main__":
    main()
