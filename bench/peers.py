"""`make bench-peers`: this gateway in the peer benchmark, beside the upstream called directly,
nginx and LiteLLM, in one run of ../shared/peer-bench (its README says how to set it up).

The peer bench is not copied here: its run_peers.sh is called from PEER_BENCH (default
../shared/peer-bench, beside the project), and this script only prepares what it needs from the
gateway, as `make bench` does: a gunicorn gateway (the production config) with a route /v1 to
the mock upstream the peer bench starts (http://127.0.0.1:9100/v1), and a key with a quota plan,
a team with a daily budget and prices for the bench's models, so every call is counted, priced,
reserved and settled.

Configurations, side by side in the same run: `gateway` on the defaults (SQLite, in-process
cache, one worker); with DATABASE_URL and REDIS_URL set, also `gateway-redis` on them with two
workers (a database of its own, dropped afterwards). Knobs: PEERS (direct,nginx,litellm-w2),
PEER_SCENARIOS (S1,S2,S3), PEER_DURATION (20), PEER_WARMUP (5), PEER_ARGS (more run_peers
options), BENCH_PLAN (the key's plan), GATEWAY_WORKERS_DEFAULTS (1; "1,2" runs the defaults with
one and with two workers, `gateway-w1` and `gateway-w2`, the second with
GATEWAY_ALLOW_WORKERS_WITHOUT_REDIS: docs/benchmarks.md says why two is not the default),
PEER_BASELINE (another checkout of the project, e.g. main's: its gateway runs in the same
configurations as `before-...`, so a change is compared with what it changes in one run).
After the peer bench's table, the issue's goals are checked against it.
"""

import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.servers import GatewayCluster  # noqa: E402


def cluster_class(checkout: Path | None):
    """GatewayCluster of this checkout, or of another one (PEER_BASELINE): its servers run its code."""
    if checkout is None:
        return GatewayCluster
    import importlib.util

    spec = importlib.util.spec_from_file_location("baseline_servers", checkout / "tests" / "servers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.GatewayCluster


PEER_BENCH = Path(os.environ.get("PEER_BENCH") or ROOT.parent / "shared" / "peer-bench")
MOCK = "http://127.0.0.1:9100/v1"
PLAN = os.environ.get("BENCH_PLAN", "requests_per_minute=10**9, tokens_per_day=10**12")
SETUP = f"""
from decimal import Decimal
from routes_admin.models import APIKey, ModelPrice, QuotaPlan, Route, Team, UpstreamTarget
plan = QuotaPlan.objects.create(name='peer-bench', {PLAN})
route = Route.objects.create(name='peer-bench', path_prefix='/v1', read_timeout=120)
UpstreamTarget.objects.create(route=route, name='mock', url='{MOCK}')
for model in ('bench-d0', 'bench-d1000'):
    ModelPrice.objects.create(model=model, input_per_million=Decimal('0.15'), output_per_million=Decimal('0.6'),
                              valid_from='2020-01-01T00:00:00+00:00')
team = Team.objects.create(name='peer-bench', budget_per_day=Decimal('1000000000'))
key, secret = APIKey.objects.issue(name='peer-bench', all_routes=True, quota_plan=plan)
APIKey.objects.filter(pk=key.pk).update(team=team)
print(secret)
"""


def gateway(name: str, workers: int, database_url: str, redis_url: str, tmp: Path, checkout: Path | None = None):
    """A cluster and its running gunicorn, on these settings ("" = the defaults)."""
    saved = {name: os.environ.pop(name, None) for name in ("DATABASE_URL", "REDIS_URL")}
    try:
        if database_url:
            os.environ["DATABASE_URL"] = database_url  # the cluster makes a database of its own there
        folder = tmp / name
        folder.mkdir()
        env = {"GATEWAY_LOG_FLUSH_SECONDS": "0.5", "GATEWAY_CONFIG_TTL": "1", "REDIS_URL": redis_url}
        if workers > 1 and not redis_url:
            env["GATEWAY_ALLOW_WORKERS_WITHOUT_REDIS"] = "1"
        cluster = cluster_class(checkout)(folder, **env)
        secret = cluster.shell(SETUP).split()[-1]
        process = cluster.start(workers=workers, **env)
    finally:
        for variable, value in saved.items():
            if value is None:
                os.environ.pop(variable, None)
            else:
                os.environ[variable] = value
    return cluster, process, secret


def goals(results: dict) -> list[str]:
    """The issue's goals, each gateway against the peers of the same run."""
    rows = {(r["peer"], r["scenario"]): r for r in results["results"] if "ok_rps" in r}
    lines = []
    for peer in sorted({p for p, _ in rows if p.startswith(("gateway", "before"))}):
        s1, litellm = rows.get((peer, "S1")), rows.get(("litellm-w2", "S1"))
        if s1 and litellm and litellm["ok_rps"]:
            times = s1["ok_rps"] / litellm["ok_rps"]
            lines.append(
                f"{peer}: S1 {times:.1f}x LiteLLM (2 workers)  [goal >= 6x: {'ok' if times >= 6 else 'MISSED'}]"
            )
        s3, direct = rows.get((peer, "S3")), rows.get(("direct", "S3"))
        if s3 and direct and direct["ok_rps"]:
            ratio, added = s3["ok_rps"] / direct["ok_rps"], s3["p50_ms"] - direct["p50_ms"]
            lines.append(
                f"{peer}: S3 x{ratio:.3f} direct, p50 {added:+.0f} ms  "
                f"[goals >= x0.97, <= +20 ms: {'ok' if ratio >= 0.97 else 'MISSED'}, {'ok' if added <= 20 else 'MISSED'}]"
            )
        s2 = rows.get((peer, "S2"))
        if s2 and s2.get("ttfb"):
            lines.append(f"{peer}: S2 {s2['ok_rps']:.0f} streams/s, TTFB p50 {s2['ttfb'].get('ttfb_p50_ms', 0):.1f} ms")
    return lines


def main() -> int:
    runner = PEER_BENCH / "run_peers.sh"
    if not runner.is_file():
        print(
            f"make bench-peers: the peer bench is not at {PEER_BENCH} (its run_peers.sh is missing).\n"
            "It lives in the shared folder beside the project (../shared/peer-bench); set PEER_BENCH to its path.",
            file=sys.stderr,
        )
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="gateway-peers-"))
    counts = [int(n) for n in os.environ.get("GATEWAY_WORKERS_DEFAULTS", "1").split(",")]
    configurations = [("gateway" if len(counts) == 1 else f"gateway-w{n}", n, "", "") for n in counts]
    database_url, redis_url = os.environ.get("DATABASE_URL", ""), os.environ.get("REDIS_URL", "")
    if database_url.startswith("postgres") and redis_url:
        configurations.append(("gateway-redis", 2, database_url, redis_url))
    else:
        print("DATABASE_URL (PostgreSQL) and REDIS_URL are not both set: the defaults only.", file=sys.stderr)
    baseline = Path(os.environ["PEER_BASELINE"]).resolve() if os.environ.get("PEER_BASELINE") else None
    runs = [(name, workers, database, redis, None) for name, workers, database, redis in configurations]
    if baseline is not None:
        runs = [
            (f"before-{name.removeprefix('gateway-') if name != 'gateway' else 'defaults'}", *rest[:3], baseline)
            for name, *rest in runs
        ] + runs
    started = []
    try:
        extras = []
        for name, workers, database, redis, checkout in runs:
            cluster, process, secret = gateway(name, workers, database, redis, tmp, checkout)
            started.append(cluster)
            extras += ["--extra", f"{name}={process.url}/v1", "--extra-auth", f"Bearer {secret}"]
            extras += ["--extra-pid", str(process.pid)]
        out = tmp / "results"
        command = [
            str(runner),
            "--peers",
            os.environ.get("PEERS", "direct,nginx,litellm-w2"),
            "--scenarios",
            os.environ.get("PEER_SCENARIOS", "S1,S2,S3"),
            "--duration",
            os.environ.get("PEER_DURATION", "20"),
            "--warmup",
            os.environ.get("PEER_WARMUP", "5"),
            "--out",
            str(out),
            *extras,
            *shlex.split(os.environ.get("PEER_ARGS", "")),
        ]
        load = os.getloadavg()
        print(f"load average before the run: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}", file=sys.stderr)
        # Not the gateway's database and cache: LiteLLM reads DATABASE_URL too (and then wants prisma).
        peer_env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
        finished = subprocess.run(command, cwd=PEER_BENCH, env=peer_env)
        if finished.returncode != 0:
            return finished.returncode
        results = json.loads((out / "results.json").read_text())
        load = os.getloadavg()
        print(f"\nload average after the run: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
        print("\n".join(["", "goals (issue 21):", *goals(results)]))
        kept = ROOT / "bench" / "results"
        kept.mkdir(exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        (kept / f"peers-{stamp}.txt").write_text((out / "table.txt").read_text() + "\n".join(goals(results)) + "\n")
        (kept / f"peers-{stamp}.json").write_text(json.dumps(results, indent=1))
    finally:
        for cluster in started:
            cluster.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
