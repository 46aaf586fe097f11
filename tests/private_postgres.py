"""A PostgreSQL server of a test's own (initdb into a temporary folder), to stop and start for
outages without touching the shared one.

It listens on no TCP port at all, only on a Unix socket in its own folder (listen_addresses='',
-k folder): no port to choose, so none another process could take between choosing and binding,
and a restart finds its address free. Django, psycopg and libpq reach it by that folder
(`postgres://postgres@/name?host=/the/folder`: django-environ passes `host` on to psycopg)."""

import os
import shutil
import subprocess
import tempfile

import psycopg
import pytest

AS_POSTGRES = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []  # initdb refuses root


class PrivatePostgres:
    def __init__(self):
        if not shutil.which("initdb") or not shutil.which("pg_ctl"):
            pytest.skip("initdb and pg_ctl are needed for a private PostgreSQL server")
        self.folder = tempfile.mkdtemp(prefix="gateway-test-pg-")
        if AS_POSTGRES:
            shutil.chown(self.folder, "postgres")
        self.data = os.path.join(self.folder, "data")
        self._run("initdb", "-D", self.data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        self.start()

    def url(self, name: str = "postgres") -> str:
        return f"postgres://postgres@/{name}?host={self.folder}"

    def create_database(self, name: str) -> str:
        """A new, empty database on it; its URL."""
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def _run(self, *args: str) -> None:
        subprocess.run([*AS_POSTGRES, *args], check=True, capture_output=True, timeout=60)

    def start(self) -> None:
        options = f"-k {self.folder} -c listen_addresses='' -c fsync=off"
        self._run("pg_ctl", "-D", self.data, "-o", options, "-l", os.path.join(self.folder, "log"), "-w", "start")

    def stop(self) -> None:
        """As an outage: every connection is cut, new ones are refused."""
        self._run("pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop")

    def close(self) -> None:
        subprocess.run(
            [*AS_POSTGRES, "pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop"], capture_output=True, timeout=60
        )
        shutil.rmtree(self.folder, ignore_errors=True)


@pytest.fixture
def private_pg():
    """A PrivatePostgres for the test, removed after it (tests/conftest.py offers it to every test)."""
    server = PrivatePostgres()
    yield server
    server.close()
