"""`make run`: the demo component on :9000, the gateway under gunicorn on :8000 and one jobs worker;
Ctrl-C stops them all (the worker first lets its running job finish, up to GATEWAY_JOB_SHUTDOWN_SECONDS)."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


def taken_ports(env: dict) -> list[str]:
    """One line per port `make run` needs that something else already holds, naming its setting."""
    bind = env.get("GATEWAY_BIND", "127.0.0.1:8000")
    host, _, port = bind.rpartition(":")
    demo_port = env.get("DEMO_PORT", "9000")
    wanted = [
        (host.strip("[]") or "127.0.0.1", port, "GATEWAY_BIND", f"GATEWAY_BIND={host or '127.0.0.1'}:8100"),
        ("127.0.0.1", demo_port, "DEMO_PORT", "DEMO_PORT=9100"),
    ]
    problems = []
    for address, number, setting, example in wanted:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            # As gunicorn binds: SO_REUSEADDR, so a port in TIME_WAIT is not reported as taken.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((address, int(number)))
            except OSError:
                current = bind if setting == "GATEWAY_BIND" else demo_port
                problems.append(
                    f"Port {number} on {address} is taken ({setting}={current}); pick another: {example} make run"
                )
    return problems


def main() -> int:
    env = dict(os.environ)
    demo_port = env.get("DEMO_PORT", "9000")
    bind = env.get("GATEWAY_BIND", "127.0.0.1:8000")
    # Own sessions: Ctrl-C reaches only this script, which stops both gracefully with SIGTERM
    # (gunicorn treats SIGINT as "quit now" and its gevent worker prints a traceback).
    demo = subprocess.Popen(
        [PYTHON, "-m", "demo_upstream", "--port", demo_port], cwd=ROOT, env=env, start_new_session=True
    )
    gateway = subprocess.Popen(
        [PYTHON, "-m", "gunicorn", "--config", "gateway_project/gunicorn.conf.py", "gateway_project.wsgi"],
        cwd=ROOT,
        env=env,
        start_new_session=True,
    )
    worker = subprocess.Popen([PYTHON, "manage.py", "jobs_worker"], cwd=ROOT, env=env, start_new_session=True)
    print(
        f"\nGateway on http://{bind} (admin: /admin/), demo component on http://127.0.0.1:{demo_port}, "
        "one jobs worker. Ctrl-C stops them all.\n",
        flush=True,
    )
    children = (gateway, demo, worker)
    stopping = False

    def stop(*_):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    # The gateway or the demo component ending ends the run; the worker may be killed and started
    # again by hand (`manage.py jobs_worker`): its jobs are not lost (docs/jobs.md).
    worker_gone = False
    while not stopping and gateway.poll() is None and demo.poll() is None:
        if not worker_gone and worker.poll() is not None:
            worker_gone = True
            print("\nThe jobs worker exited; start one again: .venv/bin/python manage.py jobs_worker\n", flush=True)
        time.sleep(0.2)
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    for child in children:
        try:
            child.wait(timeout=35 if child is not worker else float(env.get("GATEWAY_JOB_SHUTDOWN_SECONDS", 60)) + 5)
        except subprocess.TimeoutExpired:
            child.kill()
    return 0 if stopping else 1


def read_dot_env() -> None:
    """The settings' .env (GATEWAY_DOT_ENV), the environment winning, as the gateway reads it: a
    port set there is the one the ports are checked on, the demo started on and setup_demo's route
    points at."""
    import environ

    dot_env = os.environ.get("GATEWAY_DOT_ENV", str(ROOT / ".env"))
    if dot_env and Path(dot_env).is_file():
        environ.Env.read_env(dot_env, overwrite=False)


if __name__ == "__main__":
    read_dot_env()
    if sys.argv[1:] == ["--check-ports"]:
        # `make run` asks this first, before migrating or starting anything.
        problems = taken_ports(dict(os.environ))
        for problem in problems:
            print(problem, file=sys.stderr)
        sys.exit(1 if problems else 0)
    sys.exit(main())
