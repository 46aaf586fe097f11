"""`make faults`: the gateway through faults under load, every call, row, job and webhook counted.

Starts, on 127.0.0.1 and all of its own: a PostgreSQL server (initdb in a temporary folder, a
spare port) and a Redis server, two gateway instances (gunicorn, 2 workers each, the production
settings), two `manage.py jobs_worker` processes, a counting upstream (one count per call or job,
by a mark in the request's body) and a webhook receiver. Clients call both instances without
pause while jobs with webhooks are submitted, and then:

  (a) a worker of instance A is killed with SIGKILL;
  (b) PostgreSQL is stopped for FAULTS_OUTAGE seconds (20) with jobs running, and started again;
  (c) PostgreSQL is stopped again; 3 s into the outage instance B is stopped gracefully (SIGTERM);
      PostgreSQL is started again and B restarted.

Then the load stops, the jobs and webhooks are waited for, and it prints the counts and checks:
every call answered has its log row (but the rows of calls the killed worker answered within its
write lag, which a SIGKILL loses by design: counted apart, each checked against the lag on
/metrics), no row twice, every job submitted completed exactly once (one upstream call each),
and every completed job's webhook delivered at least once. Exits 1 when a check fails.

Environment: FAULTS_CLIENTS (16 calling clients), FAULTS_JOB_RATE (jobs submitted per second, 2),
FAULTS_OUTAGE (seconds, 20).
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import date
from http.client import HTTPConnection, HTTPException
from itertools import count
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.private_postgres import PrivatePostgres  # noqa: E402
from tests.private_redis import PrivateRedis  # noqa: E402
from tests.servers import GatewayCluster, client_connections, workers_of  # noqa: E402
from tests.upstream import UpstreamServer  # noqa: E402

CLIENTS = int(os.environ.get("FAULTS_CLIENTS", "16"))
JOB_RATE = float(os.environ.get("FAULTS_JOB_RATE", "2"))
OUTAGE = float(os.environ.get("FAULTS_OUTAGE", "20"))
JOB_SECONDS = 0.8  # how long the upstream takes for a job: some are running when the database stops
FLUSH_SECONDS = 0.5  # GATEWAY_LOG_FLUSH_SECONDS, the production default
SUBMITTERS = 4  # job submissions in parallel: one at a time, a slow answer under load would slow the rate
STARTED = time.monotonic()


def say(message: str) -> None:
    print(f"[{time.monotonic() - STARTED:6.1f} s] {message}", flush=True)


class CountingUpstream:
    """Answers every call (jobs after JOB_SECONDS) and counts the calls per mark (the body's first message)."""

    def __init__(self):
        self.calls: Counter = Counter()
        self.lock = threading.Lock()
        self.server = UpstreamServer()
        self.server.reply = self.reply
        self.server.httpd.handle_error = lambda request, address: None  # a killed worker's cut connections
        self.url = self.server.url

    def reply(self, handler) -> None:
        mark = json.loads(handler.received.body)["messages"][0]["content"]
        with self.lock:
            self.calls[mark] += 1
        self.server.requests.clear()  # kept by the test server; not needed here
        if mark.startswith("job-"):
            time.sleep(JOB_SECONDS)
        handler.send_json(200, {"id": mark, "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}})


class Receiver:
    """The webhook receiver: counts the deliveries per job."""

    def __init__(self):
        self.deliveries: Counter = Counter()
        self.lock = threading.Lock()
        self.server = UpstreamServer()
        self.server.reply = self.reply
        self.url = self.server.url

    def reply(self, handler) -> None:
        with self.lock:
            self.deliveries[handler.received.headers.get("x-gateway-job-id", "")] += 1
        self.server.requests.clear()
        handler.send_json(200, {})


class Load:
    """Clients calling the instances without pause, each on a keep-alive connection, and a job submitter.

    Kept per call: the request id, the instance, the status and when the answer arrived."""

    def __init__(self, instances: list[str], secret: str, callback: str):
        self.instances, self.secret, self.callback = instances, secret, callback
        self.answered: dict = {}  # request id -> (instance index, status, monotonic time answered)
        self.sent: set = set()
        self.jobs: dict = {}  # job id -> submission request id
        self.job_refusals: Counter = Counter()  # status -> submissions not queued
        self.polls: Counter = Counter()  # status -> answers to GET /jobs/<id>
        self.slowest_503 = 0.0  # seconds: how long the slowest 503 (a database outage) took to come
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self.client, args=(n,)) for n in range(CLIENTS)]
        self.job_ids = count()
        self.threads += [threading.Thread(target=self.submitter) for _ in range(SUBMITTERS)]
        self.threads.append(threading.Thread(target=self.poller))
        for thread in self.threads:
            thread.start()

    def call(self, http: HTTPConnection, request_id: str, headers: dict, method: str = "POST", path: str = "") -> tuple:
        headers = {"Authorization": f"Bearer {self.secret}", "X-Request-ID": request_id, **headers}
        body = None
        if method == "POST":
            body = json.dumps({"model": "m", "messages": [{"role": "user", "content": request_id}]})
            self.sent.add(request_id)
        started = time.monotonic()
        http.request(method, path or "/v1/chat/completions", body=body, headers=headers)
        response = http.getresponse()
        answer = response.read()
        if response.status == 503:
            self.slowest_503 = max(self.slowest_503, time.monotonic() - started)
        return response.status, answer

    def client(self, n: int) -> None:
        instance = n % len(self.instances)
        host, port = self.instances[instance].removeprefix("http://").split(":")
        ids = count()
        while not self.stopping.is_set():
            http = HTTPConnection(host, int(port), timeout=30)
            try:
                while not self.stopping.is_set():
                    request_id = f"call-{n}-{next(ids)}"
                    status, _ = self.call(http, request_id, {})
                    self.answered[request_id] = (instance, status, time.monotonic())
            except (OSError, HTTPException):
                time.sleep(0.1)  # the instance or its worker is gone: connect again
            finally:
                http.close()

    def submitter(self) -> None:
        while not self.stopping.wait(SUBMITTERS / JOB_RATE):
            n = next(self.job_ids)
            instance = n % len(self.instances)
            host, port = self.instances[instance].removeprefix("http://").split(":")
            http = HTTPConnection(host, int(port), timeout=30)
            request_id = f"job-{n}"
            try:
                status, body = self.call(http, request_id, {"Prefer": "respond-async", "X-Callback-URL": self.callback})
            except (OSError, HTTPException):
                continue
            finally:
                http.close()
            self.answered[request_id] = (instance, status, time.monotonic())
            if status == 202:
                self.jobs[json.loads(body)["id"]] = request_id
            else:
                self.job_refusals[status] += 1

    def poller(self) -> None:
        """A client polling its jobs, as the SDK does (GET /jobs/<id>), on both instances in turn."""
        ids = count()
        while not self.stopping.wait(0.25):
            if not self.jobs:
                continue
            n = next(ids)
            host, port = self.instances[n % len(self.instances)].removeprefix("http://").split(":")
            http = HTTPConnection(host, int(port), timeout=30)
            try:
                job = list(self.jobs)[n % len(self.jobs)]
                status, _ = self.call(http, f"poll-{n}", {}, method="GET", path=f"/jobs/{job}")
                self.polls[status] += 1
            except (OSError, HTTPException):
                pass
            finally:
                http.close()

    def stop(self) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(60)


def lag_bound(metrics_text: str) -> float:
    """The upper edge of the highest non-empty bucket of gateway_log_write_lag_seconds."""
    bound, seen = 0.0, 0.0
    for line in metrics_text.splitlines():
        if line.startswith("gateway_log_write_lag_seconds_bucket"):
            flushes = float(line.rsplit(" ", 1)[1])
            if flushes > seen:
                bound, seen = float(line.split('le="', 1)[1].split('"', 1)[0]), flushes
    return bound


def database_counts(cluster: GatewayCluster) -> dict:
    return json.loads(
        cluster.shell(
            "import json\n"
            "from django.db.models import Sum\n"
            "from jobs.models import Job, WebhookDelivery\n"
            "from routes_admin.models import RequestLog, SpooledLogFile\n"
            "rows = list(RequestLog.objects.values_list('request_id', 'job_id'))\n"
            "print(json.dumps({\n"
            "    'calls': [r for r, job in rows if job is None],\n"
            "    'runs': [[r, str(job)] for r, job in rows if job is not None],\n"
            "    'jobs': {str(i): s for i, s in Job.objects.values_list('id', 'status')},\n"
            "    'delivered': [str(j) for j in WebhookDelivery.objects.filter(status__gte=200, status__lt=300)"
            ".values_list('job_id', flat=True)],\n"
            "    'replayed': SpooledLogFile.objects.aggregate(n=Sum('rows'))['n'] or 0,\n"
            "}))"
        )
    )


def wait_until(check, timeout: float, every: float = 5.0):
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(every)


class Run:
    def __init__(self, folder: Path):
        self.folder = folder
        self.pg = PrivatePostgres()
        database_url = self.pg.create_database("gateway")
        self.redis = PrivateRedis(folder)
        self.upstream = CountingUpstream()
        self.receiver = Receiver()
        # The cluster's database and Redis are these private ones, never a shared server's.
        os.environ.pop("DATABASE_URL", None)
        os.environ["REDIS_URL"] = self.redis.url
        self.cluster = GatewayCluster(
            folder,
            DATABASE_URL=database_url,
            REDIS_URL=self.redis.url,
            GATEWAY_LOG_FLUSH_SECONDS=FLUSH_SECONDS,
            GATEWAY_CONFIG_TTL=1,
            GATEWAY_WEBHOOK_HOSTS=f"127.0.0.1:{self.receiver.server.port}",
            GATEWAY_WEBHOOK_SECRET="faults-webhook-secret",
        )
        self.jobs_workers: list[subprocess.Popen] = []

    def start(self) -> str:
        secret = self.cluster.route_and_key(self.upstream.url, name="faults")
        self.a = self.cluster.start(workers=2)
        self.b = self.cluster.start(workers=2)
        for n in range(2):
            log = open(self.folder / f"jobs-worker-{n}.log", "wb")
            self.jobs_workers.append(
                subprocess.Popen(
                    [sys.executable, "manage.py", "jobs_worker"],
                    cwd=ROOT,
                    env=self.cluster.env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        return secret

    def logs(self) -> str:
        paths = [*self.folder.glob("gateway-*.log"), *self.folder.glob("jobs-worker-*.log")]
        return "".join(path.read_text(errors="replace") for path in paths)

    def close(self) -> None:
        for process in self.jobs_workers:
            if process.poll() is None:
                process.kill()
            process.wait()
        self.cluster.close()
        self.upstream.server.stop()
        self.receiver.server.stop()
        self.redis.stop()
        self.pg.close()


def main() -> int:
    folder = Path(tempfile.mkdtemp(prefix="gateway-faults-"))
    run = Run(folder)
    try:
        return faults(run)
    finally:
        run.close()
        if os.environ.get("FAULTS_KEEP"):
            print(f"logs kept in {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)


def faults(run: Run) -> int:
    secret = run.start()
    say(f"PostgreSQL on a socket in {run.pg.folder}, Redis on {run.redis.port}; instances {run.a.url} and {run.b.url}")
    load = Load([run.a.url, run.b.url], secret, f"{run.receiver.url}/hook")
    try:
        time.sleep(8)

        # (a) SIGKILL a worker of instance A: the one serving the most clients.
        port_a = int(run.a.url.rsplit(":", 1)[1])
        killed = max(workers_of(run.a.pid), key=lambda pid: client_connections(pid, port_a))
        killed_at = time.monotonic()
        os.kill(killed, signal.SIGKILL)
        say(f"(a) killed worker {killed} of instance A with SIGKILL")
        time.sleep(8)
        lag = lag_bound(requests.get(f"{run.a.url}/metrics", timeout=30).text)

        # (b) PostgreSQL away for OUTAGE seconds while jobs run.
        run.pg.stop()
        say(f"(b) PostgreSQL stopped for {OUTAGE:g} s, {len(load.jobs)} jobs submitted so far")
        time.sleep(OUTAGE)
        run.pg.start()
        say("(b) PostgreSQL started again")
        time.sleep(15)

        # (c) A graceful stop of instance B during an outage, and B started again.
        run.pg.stop()
        say("(c) PostgreSQL stopped")
        time.sleep(3)
        run.b.process.send_signal(signal.SIGTERM)
        say("(c) instance B stopping gracefully (SIGTERM)")
        exit_code = run.b.process.wait(60)
        say(f"(c) instance B exited with {exit_code}")
        time.sleep(5)
        run.pg.start()
        say("(c) PostgreSQL started again")
        port_b = run.b.url.rsplit(":", 1)[1]
        run.b.log_path.rename(run.b.log_path.with_suffix(".before-stop.log"))  # the restart writes a new one
        run.b = run.cluster.start(workers=2, GATEWAY_BIND=f"127.0.0.1:{port_b}")
        say("(c) instance B started again")
        time.sleep(10)
    finally:
        load.stop()
    say(f"load stopped: {len(load.answered)} calls answered, {len(load.jobs)} jobs submitted")

    def settled():
        counts = database_counts(run.cluster)
        jobs_done = all(counts["jobs"].get(job) in ("succeeded", "failed", "cancelled") for job in load.jobs)
        done = {job for job, status in counts["jobs"].items() if status == "succeeded"}
        hooks = done <= set(run.receiver.deliveries) and done <= set(counts["delivered"])
        return counts if jobs_done and hooks else None

    counts = wait_until(settled, timeout=240) or database_counts(run.cluster)
    time.sleep(2 * FLUSH_SECONDS)  # the last rows of the last job runs
    counts = database_counts(run.cluster)
    return report(run, load, counts, killed_at, lag)


def report(run: Run, load: Load, counts: dict, killed_at: float, lag: float) -> int:
    rows = Counter(counts["calls"])
    answered = load.answered
    lost = set(answered) - set(rows)
    bound = lag + FLUSH_SECONDS  # the flush the kill interrupted is one more than the histogram saw
    by_kill = {rid for rid in lost if answered[rid][0] == 0 and 0 <= killed_at - answered[rid][2] <= bound}
    unexplained = lost - by_kill
    oldest_lost = max((killed_at - answered[rid][2] for rid in by_kill), default=0.0)
    twice = [rid for rid, n in rows.items() if n > 1]
    not_sent = set(rows) - load.sent

    jobs = counts["jobs"]
    submitted = set(load.jobs)
    completed = {job for job in submitted if jobs.get(job) == "succeeded"}
    job_calls = {job: run.upstream.calls[rid] for job, rid in load.jobs.items()}
    not_once = {job: n for job, n in job_calls.items() if n != 1}
    runs_logged = Counter(job for _, job in counts["runs"])
    hooked = {job for job in completed if run.receiver.deliveries[job] >= 1}
    logs = run.logs()
    spooled = sum(int(n) for n in re.findall(r"database unavailable: kept (\d+) request log row", logs))
    statuses = Counter(status for _, status, _ in answered.values())
    other_polls = sum(n for status, n in load.polls.items() if status not in (200, 503))
    polls = f"{load.polls[200]} / {load.polls[503]} / {other_polls}"

    table = [
        ("calls answered (any status; job submissions included)", len(answered)),
        ("  of which 200 / 202 / 503", f"{statuses[200]} / {statuses[202]} / {statuses[503]}"),
        ("log rows of those calls", sum(rows.values())),
        (f"rows lost to the SIGKILL (answered in its last {oldest_lost:.2f} s; lag bound {bound:g} s)", len(by_kill)),
        ("upstream calls (calls and job runs)", sum(run.upstream.calls.values())),
        ("jobs submitted (202) / refused (not queued)", f"{len(submitted)} / {sum(load.job_refusals.values())}"),
        ("jobs completed / failed", f"{len(completed)} / {sum(1 for j in submitted if jobs.get(j) == 'failed')}"),
        ("upstream calls for jobs / job runs logged", f"{sum(job_calls.values())} / {sum(runs_logged.values())}"),
        (
            "webhooks delivered (jobs) / deliveries received",
            f"{len(hooked)} / {sum(run.receiver.deliveries.values())}",
        ),
        ("rows spooled / replayed", f"{spooled} / {counts['replayed']}"),
        ("job polls (GET /jobs/<id>) answered 200 / 503 / other", polls),
        ("slowest 503 (database away), seconds", f"{load.slowest_503:.1f}"),
    ]
    checks = [
        ("every call answered has its row (but the SIGKILL's, within the lag bound)", not unexplained),
        ("no row written twice, none for a call never sent", not twice and not not_sent),
        ("every job submitted completed", completed == submitted),
        ("every job ran upstream exactly once", not not_once),
        ("every completed job's webhook delivered at least once", hooked == completed),
        ("every spooled row replayed, no spool file left", spooled == counts["replayed"] and not spool_files(run)),
        ("no answer 500 (calls, submissions, polls)", not statuses[500] and not load.polls[500]),
    ]
    width = max(len(name) for name, _ in table)
    print(f"\nFault run, {date.today().isoformat()}: {CLIENTS} clients, {JOB_RATE:g} jobs/s, outage {OUTAGE:g} s\n")
    print(f"| {'count'.ljust(width)} | value |")
    print(f"|{'-' * (width + 2)}|-------|")
    for name, value in table:
        print(f"| {name.ljust(width)} | {value} |")
    print()
    for name, passed in checks:
        print(f"{'PASS' if passed else 'FAIL'}  {name}")
    if unexplained:
        print(f"  rows missing: {sorted(unexplained)[:20]} ({len(unexplained)})")
    if twice or not_sent:
        print(f"  rows twice: {twice[:20]}; rows of calls never sent: {sorted(not_sent)[:20]}")
    if completed != submitted:
        print(f"  not completed: { {job: jobs.get(job) for job in sorted(submitted - completed)[:20]} }")
    if not_once:
        print(f"  upstream calls per job, where not 1: {dict(list(not_once.items())[:20])}")
    if hooked != completed:
        print(f"  completed without a webhook: {sorted(completed - hooked)[:20]}")
    return 0 if all(passed for _, passed in checks) else 1


def spool_files(run: Run) -> list:
    return list(Path(run.cluster.env["GATEWAY_LOG_SPOOL_DIR"]).glob("*/*.spool"))


if __name__ == "__main__":
    sys.exit(main())
