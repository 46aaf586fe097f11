"""`make bench-instructions`: the gateway's cost per call in CPU instructions, which machine load
does not move (valgrind's callgrind counts instructions, not seconds).

One process runs the gateway in-process (Django's WSGI handler, the middleware, the proxy view, the
pipeline, the batched log writer) on a SQLite file and the in-process cache, and calls the demo
component (a separate process, not counted). It is run twice under callgrind, with FEW and then
MANY calls; the difference divided by MANY - FEW is the cost of one call, start-up excluded.
Environment: BENCH_FEW (default 60), BENCH_MANY (default 260), BENCH_SETUP (Python run after the
demo key is made, with `key`, `route`, `plan` in scope, to switch a feature on).
With --profile, the MANY run's callgrind file is kept and its most expensive functions printed.
With --steps, each step of the call path is counted on its own (bench/steps.py: needs `cc` and the
Python headers) and a table of instructions per call and per step is printed.
BENCH_REDIS_URL: run on that Redis (REDIS_URL) instead of the in-process cache, to count what the
Redis client costs (a cache key prefix of its own per run). BENCH_SPEND=1: a team with a daily
budget and prices on the bench key, as `make bench` has. BENCH_CONFIG_TTL and BENCH_FLUSH_SECONDS
(3600): the configuration is checked once and the rows written at exit in full batches, as a busy
gateway pays for them (see environment()). With --server, the calls also go through a gunicorn
gevent worker under callgrind, at concurrency BENCH_CONCURRENCY (8).
"""

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

FEW = int(os.environ.get("BENCH_FEW", "60"))
CONCURRENCY = int(os.environ.get("BENCH_CONCURRENCY", "8"))  # --server
MANY = int(os.environ.get("BENCH_MANY", "260"))
CHAT = json.dumps({"model": "demo-chat", "messages": [{"role": "user", "content": "Count my instructions"}]})
SETUP = """
from routes_admin.models import APIKey, QuotaPlan, Route, UpstreamTarget
plan = QuotaPlan.objects.create(name='bench', requests_per_minute=10**9, tokens_per_day=10**12)
route = Route.objects.create(name='bench', path_prefix='/v1', read_timeout=120)
UpstreamTarget.objects.create(route=route, name='demo', url='http://127.0.0.1:{port}/v1')
key, secret = APIKey.objects.issue(name='bench', all_routes=True, quota_plan=plan)
{spend}
{extra}
print(secret)
"""
# BENCH_SPEND=1, as in `make bench`: a price list and a team with a daily budget (never reached) on
# the bench key, so every call is priced, reserves and settles.
SPEND = """
from decimal import Decimal
from routes_admin.models import ModelPrice, Team
for model in ('demo-chat', 'other-a', 'other-b'):
    ModelPrice.objects.create(model=model, input_per_million=Decimal('0.15'), output_per_million=Decimal('0.6'),
                              valid_from='2020-01-01T00:00:00+00:00')
team = Team.objects.create(name='bench', budget_per_day=Decimal('1000000000'))
APIKey.objects.filter(pk=key.pk).update(team=team)
"""


def environment(tmp: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    if os.environ.get("BENCH_REDIS_URL"):
        env.update(REDIS_URL=os.environ["BENCH_REDIS_URL"], CACHE_KEY_PREFIX=f"bench-{tmp.name}")
    env.update(
        DJANGO_SETTINGS_MODULE="gateway_project.settings",
        SECRET_KEY="bench-instructions",
        GATEWAY_DOT_ENV="",
        DATABASE_URL=f"sqlite:///{tmp / 'db.sqlite3'}",
        # Work done once per interval is counted at a busy gateway's rate, not valgrind's: under its
        # ~50x slowdown a 1 s config check or a 0.5 s log flush would land every ten calls or so,
        # where a gateway serving 700 calls/s checks once per 700 calls and writes rows in batches
        # of hundreds. So the configuration is checked once, and the rows are written at exit in
        # full batches (GATEWAY_LOG_BATCH_SIZE): the difference between the two runs is what one
        # more call costs at full load.
        GATEWAY_LOG_FLUSH_SECONDS=os.environ.get("BENCH_FLUSH_SECONDS", "3600"),
        GATEWAY_CONFIG_TTL=os.environ.get("BENCH_CONFIG_TTL", "3600"),
        PYTHONHASHSEED="0",
    )
    return env


def inner(calls: int, secret: str) -> None:
    """Runs in the measured process: `calls` chat calls through the WSGI application."""
    import io

    import django

    django.setup()
    from django.core.wsgi import get_wsgi_application

    application = get_wsgi_application()
    body = CHAT.encode()
    steps_folder = os.environ.get("BENCH_STEPS_MODULE")
    if steps_folder:  # --steps: each step through a C function of its own (bench/steps.py)
        import steps

        gwsteps = steps.install(steps_folder)
        for _ in range(calls):  # what one wrapper costs: an empty step, once per call
            gwsteps.noop(int)
    else:
        gwsteps = None

    def call():
        environ = {
            "REQUEST_METHOD": "POST",
            "PATH_INFO": "/v1/chat/completions",
            "QUERY_STRING": "",
            "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "8000",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "REMOTE_ADDR": "127.0.0.1",
            "CONTENT_TYPE": "application/json",
            "CONTENT_LENGTH": str(len(body)),
            "HTTP_AUTHORIZATION": f"Bearer {secret}",
            "HTTP_HOST": "127.0.0.1:8000",
            "wsgi.input": io.BytesIO(body),
            "wsgi.url_scheme": "http",
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": False,
            "wsgi.multiprocess": True,
            "wsgi.run_once": False,
            "wsgi.version": (1, 0),
        }
        statuses = []
        start_response = lambda status, headers, exc_info=None: statuses.append(status)  # noqa: E731
        close = lambda: None  # noqa: E731
        if gwsteps is None:
            answer = application(environ, start_response)
            try:
                for _ in answer:
                    pass
            finally:
                getattr(answer, "close", close)()
        else:
            answer = gwsteps.wsgi(application, environ, start_response)
            try:
                gwsteps.body(list, answer)
            finally:
                answer.close()  # a step of its own (bench/steps.py)
        if not statuses[0].startswith("200"):
            raise SystemExit(f"call failed: {statuses[0]}")

    for _ in range(calls):
        if gwsteps is None:
            call()
        else:
            gwsteps.call(call)


def total_instructions(out_file: Path) -> int:
    text = out_file.read_text(errors="replace")
    match = re.search(r"^(?:summary|totals):\s+(\d+)", text, re.M)
    if not match:
        raise SystemExit(f"no total in {out_file}")
    return int(match.group(1))


def measure(env: dict, tmp: Path, secret: str, calls: int, tag: str = "") -> tuple[int, Path]:
    out = tmp / f"callgrind.{tag}{calls}.out"
    subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={out}",
            sys.executable,
            __file__,
            "--inner",
            str(calls),
            secret,
        ],
        cwd=ROOT,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return total_instructions(out), out


def by_step(env: dict, tmp: Path, secret: str) -> str:
    """The same two runs with every step counted on its own (bench/steps.py)."""
    import steps

    os.environ.update(env)  # the gateway's settings, for the middleware's names

    steps_env = {**env, "BENCH_STEPS_MODULE": str(steps.build(tmp, len(steps.proxied_middleware())))}
    runs = [measure(steps_env, tmp, secret, calls, tag="steps") for calls in (FEW, MANY)]
    (few_total, few_out), (many_total, many_out) = runs
    table = steps.report(
        steps.inclusive(few_out), steps.inclusive(many_out), MANY - FEW, MANY - FEW, steps.proxied_middleware()
    )
    total = (many_total - few_total) / (MANY - FEW)
    return f"{table}\ninstrumented run: {total / 1e6:.2f} M instructions per call in all"


def server_run(env: dict, tmp: Path, secret: str, calls: int, config: str = "") -> tuple[int, Path]:
    """Instructions of one gunicorn worker (the production server: gevent, gateway_project/worker.py)
    that served `calls` calls at concurrency CONCURRENCY, from its start to its exit, and its
    callgrind file. `config`: another gunicorn config file (the steps' one)."""
    import asyncio

    from loadgen import build_request, closed_loop

    from tests.servers import free_port, wait_until_up

    port = free_port()
    tag = f"server{'steps' if config else ''}{calls}"
    pattern = tmp / f"callgrind.{tag}.%p.out"
    server_env = {
        **env,
        "GATEWAY_BIND": f"127.0.0.1:{port}",
        "GATEWAY_WORKERS": "1",
        # Under valgrind a worker takes minutes to boot and to stop: not a hung one.
        "GATEWAY_WORKER_TIMEOUT": "1800",
        "GATEWAY_GRACEFUL_TIMEOUT": "600",
    }
    before = set(tmp.glob(f"callgrind.{tag}.*.out"))
    server = subprocess.Popen(
        [
            "valgrind",
            "--tool=callgrind",
            "--trace-children=yes",
            f"--callgrind-out-file={pattern}",
            sys.executable,
            "-m",
            "gunicorn",
            "--config",
            config or "gateway_project/gunicorn.conf.py",
            "gateway_project.wsgi",
        ],
        cwd=ROOT,
        env=server_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_until_up(f"http://127.0.0.1:{port}/healthz", timeout=600, process=server)
        raw = build_request(
            "POST",
            "/v1/chat/completions",
            f"127.0.0.1:{port}",
            {"Content-Type": "application/json", "Authorization": f"Bearer {secret}"},
            CHAT.encode(),
        )
        run = asyncio.run(closed_loop("127.0.0.1", port, raw, CONCURRENCY, seconds=3600, total=calls))
        if run.errors:
            raise SystemExit(f"{run.errors} of {calls} calls failed through gunicorn")
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(600)
    files = set(tmp.glob(f"callgrind.{tag}.*.out")) - before
    # The master only forks and watches; the worker is the process that served the calls.
    return max((total_instructions(path), path) for path in files)


def by_server(env: dict, tmp: Path, secret: str, in_process: float) -> str:
    (few, _), (many, _) = (server_run(env, tmp, secret, calls) for calls in (FEW, MANY))
    per_call = (many - few) / (MANY - FEW)
    text = (
        f"through gunicorn (gevent worker, concurrency {CONCURRENCY}): {per_call / 1e6:.2f} M instructions per call; "
        f"the server's share (sockets, HTTP parsing, greenlets, the worker's hooks): {(per_call - in_process) / 1e6:.2f} M"
    )
    if "--steps" in sys.argv:
        import steps

        os.environ.update(env)

        steps.build(tmp, len(steps.proxied_middleware()))
        config = str(steps.gunicorn_config(tmp, ROOT))
        (few, few_out), (many, many_out) = (server_run(env, tmp, secret, calls, config) for calls in (FEW, MANY))
        table = steps.report(
            steps.inclusive(few_out), steps.inclusive(many_out), MANY - FEW, 1, steps.proxied_middleware(), server=True
        )
        text += (
            f"\n\nthrough gunicorn, by step:\n{table}\ninstrumented: {(many - few) / (MANY - FEW) / 1e6:.2f} M per call"
        )
    return text


def main() -> None:
    from tests.servers import reported_url, wait_until_up

    tmp = Path(tempfile.mkdtemp(prefix="gateway-instructions-"))
    env = environment(tmp)
    demo = subprocess.Popen(
        [sys.executable, "-m", "demo_upstream", "--port", "0"], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        port = urlsplit(reported_url(demo, "demo upstream listening on")).port
        wait_until_up(f"http://127.0.0.1:{port}/health", process=demo)
        manage = [sys.executable, "manage.py"]
        subprocess.run([*manage, "migrate", "--noinput", "-v0"], cwd=ROOT, env=env, check=True)
        spend = SPEND if os.environ.get("BENCH_SPEND") else ""
        script = SETUP.format(port=port, spend=spend, extra=os.environ.get("BENCH_SETUP", ""))
        secret = subprocess.run(
            [*manage, "shell", "-c", script], cwd=ROOT, env=env, check=True, capture_output=True, text=True
        ).stdout.split()[-1]
        few, few_out = measure(env, tmp, secret, FEW)
        many, out = measure(env, tmp, secret, MANY)
        per_call = (many - few) / (MANY - FEW)
        print(f"instructions per call: {per_call / 1e6:.2f} M ({FEW} and {MANY} calls: {few:,} and {many:,})")
        if "--profile" in sys.argv:
            print(f"callgrind file: {out} (callgrind_annotate --inclusive=yes {out})")
        if "--steps" in sys.argv:
            print(by_step(env, tmp, secret))
        if "--server" in sys.argv:
            print(by_server(env, tmp, secret, per_call))
    finally:
        demo.terminate()
        demo.wait(10)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--inner":
        inner(int(sys.argv[2]), sys.argv[3])
    else:
        main()
