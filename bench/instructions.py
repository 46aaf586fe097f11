"""`make bench-instructions`: the gateway's cost per call in CPU instructions, which machine load
does not move (valgrind's callgrind counts instructions, not seconds).

One process runs the gateway in-process (Django's WSGI handler, the middleware, the proxy view, the
pipeline, the batched log writer) on a SQLite file and the in-process cache, and calls the demo
component (a separate process, not counted). It is run twice under callgrind, with FEW and then
MANY calls; the difference divided by MANY - FEW is the cost of one call, start-up excluded.
Environment: BENCH_FEW (default 60), BENCH_MANY (default 260), BENCH_SETUP (Python run after the
demo key is made, with `key`, `route`, `plan` in scope, to switch a feature on).
With --profile, the MANY run's callgrind file is kept and its most expensive functions printed.
"""

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

FEW = int(os.environ.get("BENCH_FEW", "60"))
MANY = int(os.environ.get("BENCH_MANY", "260"))
CHAT = json.dumps({"model": "demo-chat", "messages": [{"role": "user", "content": "Count my instructions"}]})
SETUP = """
from routes_admin.models import APIKey, QuotaPlan, Route, UpstreamTarget
plan = QuotaPlan.objects.create(name='bench', requests_per_minute=10**9, tokens_per_day=10**12)
route = Route.objects.create(name='bench', path_prefix='/v1', read_timeout=120)
UpstreamTarget.objects.create(route=route, name='demo', url='http://127.0.0.1:{port}/v1')
key, secret = APIKey.objects.issue(name='bench', all_routes=True, quota_plan=plan)
{extra}
print(secret)
"""


def environment(tmp: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(
        DJANGO_SETTINGS_MODULE="gateway_project.settings",
        SECRET_KEY="bench-instructions",
        GATEWAY_DOT_ENV="",
        DATABASE_URL=f"sqlite:///{tmp / 'db.sqlite3'}",
        GATEWAY_LOG_FLUSH_SECONDS="0.5",
        GATEWAY_CONFIG_TTL="1",
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
        answer = application(environ, lambda status, headers, exc_info=None: statuses.append(status))
        try:
            for _ in answer:
                pass
        finally:
            getattr(answer, "close", lambda: None)()
        if not statuses[0].startswith("200"):
            raise SystemExit(f"call failed: {statuses[0]}")

    for _ in range(calls):
        call()


def total_instructions(out_file: Path) -> int:
    text = out_file.read_text(errors="replace")
    match = re.search(r"^(?:summary|totals):\s+(\d+)", text, re.M)
    if not match:
        raise SystemExit(f"no total in {out_file}")
    return int(match.group(1))


def measure(env: dict, tmp: Path, secret: str, calls: int) -> tuple[int, Path]:
    out = tmp / f"callgrind.{calls}.out"
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
        script = SETUP.format(port=port, extra=os.environ.get("BENCH_SETUP", ""))
        secret = subprocess.run(
            [*manage, "shell", "-c", script], cwd=ROOT, env=env, check=True, capture_output=True, text=True
        ).stdout.split()[-1]
        few, _ = measure(env, tmp, secret, FEW)
        many, out = measure(env, tmp, secret, MANY)
        per_call = (many - few) / (MANY - FEW)
        print(f"instructions per call: {per_call / 1e6:.2f} M ({FEW} and {MANY} calls: {few:,} and {many:,})")
        if "--profile" in sys.argv:
            print(f"callgrind file: {out} (callgrind_annotate --inclusive=yes {out})")
    finally:
        demo.terminate()
        demo.wait(10)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--inner":
        inner(int(sys.argv[2]), sys.argv[3])
    else:
        main()
