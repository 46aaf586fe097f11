"""What the benchmark and the soak run against: the demo component and the gateway under gunicorn.

The gateway runs with the production server settings (gateway_project/gunicorn.conf.py and the
settings' defaults: batched log writes, 1 s config TTL), on DATABASE_URL / REDIS_URL when they are
set (a fresh PostgreSQL database of its own, dropped at the end) or a temporary SQLite file.
"""

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.servers import GatewayCluster, free_port, reported_url, wait_until_up  # noqa: E402

# The bench key's quota plan, a typical one: a request rate and a daily token budget, far above
# the load so every call is checked and admitted, and room for every job the jobs scenario queues
# (no worker runs there: past GATEWAY_JOB_MAX_QUEUED, 1000, they would be refused). BENCH_PLAN
# overrides it.
PLAN = os.environ.get("BENCH_PLAN", "requests_per_minute=10**9, tokens_per_day=10**12, max_queued_jobs=10**9")
# A second key with every limit set, to show what each extra limit costs.
FULL_PLAN = (
    "requests_per_minute=10**9, requests_per_hour=10**9, requests_per_day=10**9, tokens_per_day=10**12, "
    "tokens_per_month=10**13, max_concurrent=100000"
)
TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def tree(pid: int) -> list[int]:
    """pid and all its descendants (gunicorn master and workers)."""
    pids, todo = [], [pid]
    while todo:
        current = todo.pop()
        pids.append(current)
        try:
            for task in os.listdir(f"/proc/{current}/task"):
                children = Path(f"/proc/{current}/task/{task}/children").read_text().split()
                todo.extend(int(child) for child in children)
        except OSError:
            pass
    return pids


def cpu_seconds(pid: int) -> float:
    """User + system CPU of the process tree, from /proc/<pid>/stat."""
    total = 0
    for p in tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except OSError:
            pass
    return total / TICKS


def rss_bytes(pid: int) -> int:
    """Resident memory of the process tree (shared pages counted in each process: an upper bound)."""
    total = 0
    for p in tree(pid):
        try:
            total += int(Path(f"/proc/{p}/statm").read_text().split()[1]) * PAGE
        except OSError:
            pass
    return total


class Stack:
    def __init__(self, plan: str = "", **gateway_env):
        self.tmp = Path(tempfile.mkdtemp(prefix="gateway-bench-"))
        self.demo = subprocess.Popen(
            [sys.executable, "-m", "demo_upstream", "--port", "0"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=open(self.tmp / "demo.log", "wb"),
            text=True,
        )
        self.demo_port = urlsplit(reported_url(self.demo, "demo upstream listening on")).port
        wait_until_up(f"http://127.0.0.1:{self.demo_port}/health", process=self.demo)
        # The slow scenarios' upstream (see bench/slow_upstream.py), behind the route /slow.
        self.slow_port = free_port()
        self.slow = subprocess.Popen(
            [sys.executable, str(ROOT / "bench" / "slow_upstream.py"), str(self.slow_port)],
            cwd=ROOT,
            stderr=open(self.tmp / "slow.log", "wb"),
        )
        wait_until_up(f"http://127.0.0.1:{self.slow_port}/", process=self.slow)
        # Production defaults, not the test harness's fast ones.
        env = {"GATEWAY_LOG_FLUSH_SECONDS": "0.5", "GATEWAY_CONFIG_TTL": "1", **gateway_env}
        self.cluster = GatewayCluster(self.tmp, **env)
        self.secret, self.full_secret = self.cluster.shell(
            "from routes_admin.models import APIKey, QuotaPlan, Route, UpstreamTarget\n"
            f"plan = QuotaPlan.objects.create(name='bench', {plan or PLAN})\n"
            "route = Route.objects.create(name='bench', path_prefix='/v1', read_timeout=120)\n"
            f"UpstreamTarget.objects.create(route=route, name='demo', url='http://127.0.0.1:{self.demo_port}/v1')\n"
            "slow = Route.objects.create(name='bench-slow', path_prefix='/slow', read_timeout=120)\n"
            f"UpstreamTarget.objects.create(route=slow, name='slow', url='http://127.0.0.1:{self.slow_port}/v1')\n"
            "key, secret = APIKey.objects.issue(name='bench', all_routes=True, quota_plan=plan)\n"
            f"full = QuotaPlan.objects.create(name='every-limit', {FULL_PLAN})\n"
            "key, full_secret = APIKey.objects.issue(name='bench-every-limit', all_routes=True, quota_plan=full)\n"
            "print(secret, full_secret)"
        ).split()
        if os.environ.get("BENCH_SPEND"):
            # BENCH_SPEND=1: a price list and a team with a daily budget (never reached) on the bench key,
            # so every call is priced, reserves and settles (issue: the cost of the spend feature).
            self.cluster.shell(
                "from decimal import Decimal\n"
                "from routes_admin.models import APIKey, ModelPrice, Team\n"
                "for model in ('demo-chat', 'other-a', 'other-b'):\n"
                "    ModelPrice.objects.create(model=model, input_per_million=Decimal('0.15'),"
                " output_per_million=Decimal('0.6'), valid_from='2020-01-01T00:00:00+00:00')\n"
                "team = Team.objects.create(name='bench', budget_per_day=Decimal('1000000000'))\n"
                "APIKey.objects.filter(name='bench').update(team=team)\n"
            )
        workers = os.environ.get("GATEWAY_WORKERS") or (
            str(os.cpu_count() or 1) if os.environ.get("REDIS_URL") else "1"
        )
        self.workers = int(workers)
        self.gateway = self.cluster.start(workers=self.workers, **env)
        self.gateway_port = int(self.gateway.url.rsplit(":", 1)[1])

    @property
    def pid(self) -> int:
        return self.gateway.pid

    def log_rows(self) -> int:
        return int(self.cluster.shell("from routes_admin.models import RequestLog\nprint(RequestLog.objects.count())"))

    def wait_for_log_rows(self, expected: int, timeout: float = 30) -> int:
        """Rows are written in batches: wait until `expected` are there (or the timeout)."""
        deadline = time.monotonic() + timeout
        rows = self.log_rows()
        while rows < expected and time.monotonic() < deadline:
            time.sleep(0.5)
            rows = self.log_rows()
        return rows

    def close(self) -> None:
        self.cluster.close()
        for upstream in (self.demo, self.slow):
            upstream.terminate()
            try:
                upstream.wait(10)
            except subprocess.TimeoutExpired:
                upstream.kill()
