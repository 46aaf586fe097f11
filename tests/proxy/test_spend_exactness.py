"""The spend is exact end to end on real servers: after a burst of mixed calls (plain, streamed,
cut streams, upstream errors, retries, fallbacks, unpriced models, jobs run by a worker), a restart
of the gateway and a prune of the whole log, the spend in the rollups equals the sum over the log
rows, and each row's cost is the price applied to the tokens the upstream reported, to the last
decimal place (the rows are compared as Decimals, the rollups in whole picos).

Runs on SQLite by default and on PostgreSQL + Redis when DATABASE_URL / REDIS_URL are set.
"""

import json
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import pytest
import requests

from tests.servers import ROOT, GatewayCluster
from tests.upstream import UpstreamServer

pytestmark = pytest.mark.slow

# model -> (input per 1M, output per 1M, per call); "free" has no price.
PRICES = {
    "alpha": ("0.15", "0.6", None),
    "beta": ("2.5", "10", "0.001"),
    "gamma": ("0.333333", "1.777777", None),
    "err": ("1", "1", "0.5"),
    "retry": ("0.7", "2.1", "0.000001"),
    "fb": ("3", "9", None),
}
MILLION = Decimal(1_000_000)


def usage_for(n: int) -> dict:
    prompt, completion = 100 + 37 * n, 11 + 13 * n
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


class MixedUpstream(UpstreamServer):
    """Answers by model: errors for "err", a first 503 for each "retry" call, 500 for "fb" on the
    primary route's target (its fallback's target answers), streams for "beta" and "gamma"
    ("gamma" slowly, so the client can hang up mid-stream), JSON otherwise. The usage it reports
    depends on the call's number ("n" in the request's `user` field)."""

    def __init__(self):
        super().__init__()
        self.httpd.socket.listen(128)
        self.lock = threading.Lock()
        self.retried: set = set()
        self.reply = self._reply

    def _reply(self, handler):
        body = handler.received.json()
        model, n = body["model"], int(body.get("user") or 0)
        usage = usage_for(n)
        if model == "err":
            return handler.send_json(500, {"error": {"message": "boom"}})
        if model == "retry":
            with self.lock:
                first = n not in self.retried
                self.retried.add(n)
            if first:
                return handler.send_json(503, {"error": {"message": "busy"}})
        if model == "fb" and handler.received.path.startswith("/primary"):
            return handler.send_json(500, {"error": {"message": "primary down"}})
        if body.get("stream"):
            handler.start_chunked()
            chunk = {"choices": [{"index": 0, "delta": {"content": "hello there"}}]}
            try:
                handler.send_chunk(b"data: " + json.dumps(chunk).encode() + b"\n\n")
                for _ in range(20 if model == "gamma" else 1):
                    time.sleep(0.05 if model == "gamma" else 0)
                    handler.send_chunk(b"data: " + json.dumps(chunk).encode() + b"\n\n")
                handler.send_chunk(b"data: " + json.dumps({"choices": [], "usage": usage}).encode() + b"\n\n")
                handler.send_chunk(b"data: [DONE]\n\n")
                handler.end_chunked()
            except OSError:
                pass  # the gateway hung up: its client had gone
            return None
        return handler.send_json(200, {"choices": [{"message": {"content": "hi"}}], "usage": usage})


def expected_cost(model: str, prompt: int, completion: int, answered: bool) -> Decimal | None:
    """The price applied to the tokens, computed here on its own (not with routes_admin.pricing)."""
    if model not in PRICES:
        return None
    inp, out, per_call = PRICES[model]
    amount = (prompt * Decimal(inp) + completion * Decimal(out)) / MILLION
    if answered and per_call is not None:
        amount += Decimal(per_call)
    return amount


@pytest.fixture
def spend_cluster(tmp_path):
    upstream = MixedUpstream()
    # The failing calls must not open the targets' breakers (shared through Redis): the mix would
    # then turn into 503s that reach no upstream, and the burst would no longer hold every kind.
    cluster = GatewayCluster(
        tmp_path, GATEWAY_JOB_POLL_SECONDS="0.2", GATEWAY_JOB_WAIT_SECONDS="0.2", GATEWAY_BREAKER_FAILURES="100000"
    )
    prices = "\n".join(
        f"ModelPrice.objects.create(model={model!r}, input_per_million=Decimal({inp!r}), "
        f"output_per_million=Decimal({out!r}), per_call={f'Decimal({per_call!r})' if per_call else None}, "
        "valid_from=timezone.now() - timedelta(minutes=5))"
        for model, (inp, out, per_call) in PRICES.items()
    )
    secret = cluster.shell(
        "from datetime import timedelta\nfrom decimal import Decimal\nfrom django.utils import timezone\n"
        "from routes_admin.models import APIKey, ModelPrice, Route, UpstreamTarget\n"
        "from routes_admin.services import spend\n"
        "backup = Route.objects.create(name='backup', path_prefix='/backup', max_attempts=1)\n"
        f"UpstreamTarget.objects.create(route=backup, url='{upstream.url}/backup')\n"
        "route = Route.objects.create(name='chat', path_prefix='/v1', max_attempts=2, retry_statuses='500,503',"
        " retry_non_idempotent=True, fallback=backup)\n"
        f"UpstreamTarget.objects.create(route=route, name='one', url='{upstream.url}/primary')\n"
        f"UpstreamTarget.objects.create(route=route, name='two', url='{upstream.url}/primary')\n"
        f"{prices}\n"
        "team = spend.save_team('acme', budget_per_month='1000')\n"
        "key, secret = APIKey.objects.issue(name='k', all_routes=True, team=team, budget_per_day=Decimal('500'))\n"
        "print(secret)"
    ).strip()
    worker_log = open(tmp_path / "worker.log", "wb")
    worker = subprocess.Popen(
        [sys.executable, "manage.py", "jobs_worker"],
        cwd=ROOT,
        env=cluster.env,
        stdout=worker_log,
        stderr=subprocess.STDOUT,
    )
    yield cluster, upstream, secret
    if worker.poll() is None:
        worker.terminate()
        try:
            worker.wait(20)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
    worker_log.close()
    cluster.close()
    upstream.stop()


KINDS = ["alpha", "beta", "gamma", "err", "retry", "fb", "free", "job"]


def one_call(url: str, secret: str, n: int) -> str:
    """Call number n, of the kind KINDS[n % len(KINDS)]; returns what happened."""
    kind = KINDS[n % len(KINDS)]
    model = "alpha" if kind == "job" else kind
    body = {"model": model, "user": str(n), "messages": [{"role": "user", "content": f"call {n}"}]}
    headers = {"Authorization": f"Bearer {secret}"}
    if kind in ("beta", "gamma"):
        body["stream"] = True
    if kind == "job":
        headers["Prefer"] = "respond-async"
    if kind == "gamma":  # read the first chunk, then hang up
        with requests.post(f"{url}/v1/chat/completions", json=body, headers=headers, stream=True, timeout=20) as r:
            next(r.iter_content(64))
        return "cut"
    answer = requests.post(f"{url}/v1/chat/completions", json=body, headers=headers, timeout=20)
    answer.content  # noqa: B018 (read it all)
    return f"{kind}:{answer.status_code}"


def burst(url: str, secret: str, numbers) -> list[str]:
    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(lambda n: one_call(url, secret, n), numbers))


def wait_for_rows(cluster, count: int, timeout: float = 60.0) -> int:
    deadline = time.monotonic() + timeout
    rows = 0
    while time.monotonic() < deadline:
        rows = int(
            cluster.shell("from routes_admin.models import RequestLog\nprint(RequestLog.objects.count())").strip()
        )
        if rows >= count:
            return rows
        time.sleep(0.5)
    return rows


READ_ROWS = """
import json
from routes_admin.models import RequestLog
print(json.dumps([
    [r.model, r.prompt_tokens, r.completion_tokens, r.status, str(r.cost) if r.cost is not None else None,
     r.usage_estimated, r.streamed, bool(r.job_id), r.fallback_from, r.attempts, r.team_name, r.detail.get("cost")]
    for r in RequestLog.objects.all()
]))
"""
ROLLUP_TOTAL = """
from django.db.models import Sum
from routes_admin.models import UsageRollup
for period in ("minute", "hour", "day"):
    rows = UsageRollup.objects.filter(period=period, dimension="all")
    print(rows.aggregate(total=Sum("cost_picos"))["total"] or 0)
"""


def test_spend_in_the_rollups_equals_the_log_and_the_prices_after_restart_and_prune(spend_cluster):
    cluster, upstream, secret = spend_cluster
    calls = 48
    gateway = cluster.start(workers=2)
    outcomes = burst(gateway.url, secret, range(calls // 2))
    gateway.stop()  # graceful: the workers write what they hold
    gateway = cluster.start(workers=2)
    outcomes += burst(gateway.url, secret, range(calls // 2, calls))
    jobs = sum(1 for n in range(calls) if KINDS[n % len(KINDS)] == "job")
    rows_expected = calls + jobs  # a row per call, and a job has two: its acceptance (202) and its run
    assert wait_for_rows(cluster, rows_expected) >= rows_expected, outcomes
    gateway.stop()

    rows = json.loads(cluster.shell(READ_ROWS))
    plain = {o for o in outcomes if not o.startswith(("cut", "job", "err"))}
    assert plain == {"alpha:200", "beta:200", "retry:200", "fb:200", "free:200"}, outcomes
    assert {o for o in outcomes if o.startswith("err")} <= {"err:500", "err:502"}, outcomes

    reported = {  # every usage the upstream sent, as (prompt, completion)
        (u["prompt_tokens"], u["completion_tokens"]) for u in map(usage_for, range(calls))
    }
    total = Decimal(0)
    kinds_seen = set()
    for model, prompt, completion, status, cost, estimated, streamed, is_job, fallback_from, attempts, team, _ in rows:
        assert team == "acme"
        answered = 0 < status < 400
        want = expected_cost(model, prompt or 0, completion or 0, answered)
        if model == "free":
            assert cost is None  # no price: no cost, never 0
            kinds_seen.add("free")
            continue
        assert cost is not None and Decimal(cost) == want, (model, prompt, completion, status, cost, want)
        if status == 202:  # a job's acceptance: no upstream call, nothing spent
            assert Decimal(cost) == 0 and prompt is None
            continue
        if answered and not estimated:
            assert (prompt, completion) in reported  # the tokens the upstream reported, not a guess
        total += Decimal(cost)
        kinds_seen.add(
            "cut"
            if estimated
            else "error"
            if not answered
            else "job"
            if is_job
            else "fallback"
            if fallback_from
            else "retry"
            if attempts > 1
            else "stream"
            if streamed
            else "plain"
        )
    assert kinds_seen >= {"plain", "stream", "error", "retry", "fallback", "job", "free"}, kinds_seen

    def rollups() -> list[int]:
        return [int(line) for line in cluster.shell(ROLLUP_TOTAL).split()]

    picos = int(total.scaleb(12))
    assert total.scaleb(12) == picos  # a cost never has more than 12 places: nothing was rounded
    assert rollups() == [picos, picos, picos]
    mismatches = cluster.shell("from tests import rollup_check\nprint(repr(rollup_check.mismatches()))").strip()
    assert mismatches == "[]"

    cluster.manage("prune_logs", "--older-than", "0")
    assert cluster.shell("from routes_admin.models import RequestLog\nprint(RequestLog.objects.count())").strip() == "0"
    assert rollups() == [picos, picos, picos]  # the log pruned, the spend stays in the rollups
