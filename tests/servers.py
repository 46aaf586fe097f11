"""Real gateway servers (gunicorn, the production config) started by tests, on 127.0.0.1.

Each GatewayCluster has its own database: a temporary SQLite file by default, or a new
PostgreSQL database when DATABASE_URL is set. Instances of one cluster share that database and,
when REDIS_URL is set, Redis (under a key prefix of their own). Setup and checks run in the
servers' own environment through `cluster.shell(code)`.
"""

import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import requests

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def reported_url(process: subprocess.Popen, announcement: str, timeout: float = 20.0) -> str:
    """The URL a server started on port 0 prints once it listens, on a line `<announcement> <url>`
    of its standard output (`process` started with stdout=PIPE, text=True). The rest of its output
    is read and dropped, so the pipe never fills."""
    lines: queue.Queue = queue.Queue()

    def read() -> None:
        for line in process.stdout:
            lines.put(line)
        lines.put(None)  # the output ended: the process exited

    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + timeout
    while True:
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise RuntimeError(f"no '{announcement}' line in {timeout}s") from None
        if line is None:
            raise RuntimeError(f"server exited with {process.wait()} before it said '{announcement}'")
        if line.startswith(announcement + " "):
            return line[len(announcement) + 1 :].strip()


def on_a_free_port(start, attempts: int = 5) -> int:
    """Start a server that cannot bind port 0 and tell its port (redis-server) on a
    free port; when another process took that port in between (the start fails), on another.
    `start(port)` raises when the server did not come up. Returns the port."""
    for attempt in range(attempts):
        port = free_port()
        try:
            start(port)
            return port
        except Exception:
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


def wait_until_up(url: str, timeout: float = 20.0, process=None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            requests.get(url, timeout=1)
            return
        except requests.RequestException:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up in {timeout}s")


def listening_socket() -> socket.socket:
    """A socket already listening on a port the kernel chose: handed to a server, it cannot be
    taken by anyone else between choosing the port and serving on it (free_port() can)."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(2048)
    listener.set_inheritable(True)
    return listener


class GatewayProcess:
    def __init__(self, process: subprocess.Popen, url: str, log_path: Path):
        self.process, self.url, self.log_path = process, url, log_path

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill_all(self) -> None:
        """The master and every worker, even workers orphaned by a master that died first."""
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait()

    def stop(self, sig=signal.SIGTERM, timeout: float = 40.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


class GatewayCluster:
    def __init__(self, tmp_path: Path, **env):
        self.tmp_path = tmp_path
        self.processes: list[GatewayProcess] = []
        self._pg_admin_url = None
        base_url = os.environ.get("DATABASE_URL", "")
        if base_url.startswith("postgres"):
            name = f"gw_servers_{uuid.uuid4().hex[:10]}"
            parts = urlsplit(base_url)
            self._pg_admin_url = urlunsplit(parts._replace(path="/postgres"))
            with psycopg.connect(self._pg_admin_url, autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{name}"')
            self.database_name = name
            database_url = urlunsplit(parts._replace(path=f"/{name}"))
        else:
            database_url = f"sqlite:///{tmp_path / 'gateway.sqlite3'}"
        # No DJANGO_SETTINGS_MODULE (pytest's is the tests' own): the servers boot the way
        # `make run` and a production gunicorn do, from gunicorn.conf.py and manage.py alone.
        inherited = {name: value for name, value in os.environ.items() if name != "DJANGO_SETTINGS_MODULE"}
        self.env = {
            **inherited,
            "SECRET_KEY": "test-servers-secret",
            "DATABASE_URL": database_url,
            "CACHE_KEY_PREFIX": f"gwsrv{uuid.uuid4().hex[:8]}",
            "GATEWAY_LOG_FLUSH_SECONDS": "0.2",
            "GATEWAY_CONFIG_TTL": "0.2",
            "GATEWAY_LOG_SPOOL_DIR": str(tmp_path / "spool"),
            "PYTHONUNBUFFERED": "1",
            # Several workers without Redis: the tests that start them do not rely on shared limits.
            **({} if os.environ.get("REDIS_URL") else {"GATEWAY_ALLOW_WORKERS_WITHOUT_REDIS": "1"}),
            **{k: str(v) for k, v in env.items()},
        }
        self.manage("migrate", "--noinput", "-v", "0")

    def manage(self, *args: str) -> str:
        result = subprocess.run(
            [sys.executable, "manage.py", *args], cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=120
        )
        if result.returncode != 0:
            raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
        return result.stdout

    def shell(self, code: str) -> str:
        """Run Python in the servers' environment (Django set up); returns what it printed."""
        return self.manage("shell", "--no-imports", "-c", code)

    def route_and_key(self, upstream_url: str, key_fields: str = "", **route_fields) -> str:
        """A route (prefix /v1 unless given) to one target and a key for every route; returns the key.

        key_fields is Python keyword text for APIKey, e.g. "requests_per_minute=100".
        """
        route = ", ".join(
            f"{name}={value!r}" for name, value in {"name": "r", "path_prefix": "/v1", **route_fields}.items()
        )
        return self.shell(
            "from routes_admin.models import APIKey, Route, UpstreamTarget\n"
            f"route = Route.objects.create({route})\n"
            f"UpstreamTarget.objects.create(route=route, url='{upstream_url}')\n"
            f"key, secret = APIKey.objects.issue(name='k', all_routes=True, {key_fields})\n"
            "print(secret)"
        ).strip()

    def start_jobs_worker(self, log_path: Path) -> subprocess.Popen:
        """A `manage.py jobs_worker` on this cluster's database and cache, its output in `log_path`;
        the test stops it (kill, then wait)."""
        with open(log_path, "wb") as log:
            return subprocess.Popen(
                [sys.executable, "manage.py", "jobs_worker"],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def start(self, workers: int = 1, **env) -> GatewayProcess:
        # gunicorn serves on the socket the test bound, handed over the way systemd hands sockets
        # (fd 3, LISTEN_FDS, LISTEN_PID: the shell's pid, which exec keeps), unless the test names
        # its own GATEWAY_BIND.
        listener = None if "GATEWAY_BIND" in env else listening_socket()
        port = listener.getsockname()[1] if listener else int(str(env["GATEWAY_BIND"]).rsplit(":", 1)[1])
        log_path = self.tmp_path / f"gateway-{port}.log"
        process_env = {
            **self.env,
            "GATEWAY_BIND": f"127.0.0.1:{port}",
            "GATEWAY_WORKERS": str(workers),
            **{k: str(v) for k, v in env.items()},
        }
        with open(log_path, "wb") as log:
            command = [
                sys.executable,
                "-m",
                "gunicorn",
                "--config",
                "gateway_project/gunicorn.conf.py",
                "gateway_project.wsgi",
            ]
            if listener:
                handover = f'LISTEN_PID=$$ LISTEN_FDS=1 exec "$0" "$@" 3<&{listener.fileno()}'
                command = ["bash", "-c", handover, *command]
            process = subprocess.Popen(
                command,
                cwd=ROOT,
                env=process_env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: close() ends the workers too
                pass_fds=(listener.fileno(),) if listener else (),
            )
        gateway = GatewayProcess(process, f"http://127.0.0.1:{port}", log_path)
        self.processes.append(gateway)
        try:
            wait_until_up(gateway.url + "/healthz", process=process)
        finally:
            if listener is not None:
                listener.close()  # the server holds its own copy; a stopped server then refuses
        return gateway

    def close(self) -> None:
        for gateway in self.processes:
            gateway.kill_all()
        if self._pg_admin_url:
            with psycopg.connect(self._pg_admin_url, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.database_name}" WITH (FORCE)')


def client_connections(pid: int, port: int) -> int:
    """Established connections to `port` that process `pid` holds (the clients it serves)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "01":
                inodes.add(fields[9])
    held = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        held += target.startswith("socket:[") and target[8:-1] in inodes
    return held


def workers_of(master_pid: int) -> list[int]:
    """The pids of a gunicorn master's workers (its child processes)."""
    return [int(pid) for pid in Path(f"/proc/{master_pid}/task/{master_pid}/children").read_text().split()]
