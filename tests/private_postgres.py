"""A PostgreSQL server of a test's own (initdb into a temporary folder, a free port), to stop and
start for outages without touching the shared one."""

import os
import shutil
import subprocess
import tempfile

import pytest

from tests.servers import on_a_free_port

AS_POSTGRES = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []  # initdb refuses root


class PrivatePostgres:
    def __init__(self):
        if not shutil.which("initdb") or not shutil.which("pg_ctl"):
            pytest.skip("initdb and pg_ctl are needed for a private PostgreSQL server")
        self.folder = tempfile.mkdtemp(prefix="gateway-test-pg-")
        if AS_POSTGRES:
            shutil.chown(self.folder, "postgres")
        self.data = os.path.join(self.folder, "data")
        self._run("initdb", "-D", self.data, "-U", "postgres", "--auth=trust", "-E", "UTF8")
        self.port = on_a_free_port(self._start_on)

    def _start_on(self, port: int) -> None:
        self.port = port
        self.start()

    def url(self, name: str = "postgres") -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{name}"

    def _run(self, *args: str) -> None:
        subprocess.run([*AS_POSTGRES, *args], check=True, capture_output=True, timeout=60)

    def start(self) -> None:
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run("pg_ctl", "-D", self.data, "-o", options, "-l", os.path.join(self.folder, "log"), "-w", "start")

    def stop(self) -> None:
        """As an outage: every connection is cut, new ones are refused."""
        self._run("pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop")

    def close(self) -> None:
        subprocess.run(
            [*AS_POSTGRES, "pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop"], capture_output=True, timeout=60
        )
        shutil.rmtree(self.folder, ignore_errors=True)
