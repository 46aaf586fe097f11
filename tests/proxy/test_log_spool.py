"""Log rows outlive a stop while the database is away: a stopping worker spools what it cannot
write, and the next process replays the spool once the database answers, each row exactly once.

The outages are a private PostgreSQL server (tests/private_postgres.py) stopped and started again.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from itertools import count
from pathlib import Path

import psycopg
import pytest
import requests

from tests.servers import ROOT, GatewayCluster, client_connections, workers_of

N_SPOOLED = 300


@pytest.fixture
def outage_cluster(tmp_path, private_pg):
    made = GatewayCluster(tmp_path, DATABASE_URL=private_pg.create_database("gateway"))
    yield made
    made.close()


def logged(cluster) -> list[str]:
    """The request ids of every RequestLog row (duplicates included)."""
    out = cluster.shell(
        "import json\nfrom routes_admin.models import RequestLog\n"
        "print(json.dumps(list(RequestLog.objects.values_list('request_id', flat=True))))"
    )
    return json.loads(out)


def spool_files(cluster) -> list[Path]:
    return sorted(Path(cluster.env["GATEWAY_LOG_SPOOL_DIR"]).glob("*/*.spool"))


class Traffic:
    """Clients calling the gateway from threads until stopped; `answered` holds the request ids answered 200."""

    def __init__(self, url: str, secret: str, clients: int = 4):
        self.url, self.secret = url, secret
        self.answered: list[str] = []
        self.sent: set[str] = set()
        self.other: list = []
        self.done = threading.Event()
        self.ids = count()
        self.threads = [threading.Thread(target=self.client, args=(n,)) for n in range(clients)]
        for thread in self.threads:
            thread.start()

    def client(self, n: int) -> None:
        deadline = time.monotonic() + 60
        while not self.done.is_set() and time.monotonic() < deadline:
            request_id = f"c{n}-{next(self.ids)}"
            self.sent.add(request_id)
            try:
                response = requests.post(
                    f"{self.url}/v1/chat/completions",
                    json={},
                    headers={"Authorization": f"Bearer {self.secret}", "X-Request-ID": request_id},
                    timeout=10,
                )
            except requests.RequestException:  # the gateway is gone, or slow to answer: not counted
                time.sleep(0.05)
                continue
            (self.answered if response.status_code == 200 else self.other).append(request_id)
            time.sleep(0.01)

    def stop(self) -> None:
        self.done.set()
        for thread in self.threads:
            thread.join(30)


def wait_for_rows(cluster, expected: set, timeout: float = 40) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        rows = logged(cluster)
        if set(rows) >= expected or time.monotonic() > deadline:
            return rows
        time.sleep(1)


def answered_by(traffic: Traffic, count: int, timeout: float = 30) -> int:
    """Wait until the clients have `count` answers (a busy machine answers more slowly); how many they have."""
    deadline = time.monotonic() + timeout
    while len(traffic.answered) < count and time.monotonic() < deadline:
        time.sleep(0.1)
    return len(traffic.answered)


def every_worker_knows(gateway, secret: str, workers: int, timeout: float = 30) -> set[str]:
    """Each worker has served a call with this key, so holds the configuration and the key in
    memory; returns the calls' request ids. Connections are kept open until every worker holds one:
    which worker accepts a new connection is the kernel's choice, and a busy machine may let one
    worker take them all."""
    port = int(gateway.url.rsplit(":", 1)[1])
    sessions, deadline = [], time.monotonic() + timeout
    try:
        while True:
            pids = workers_of(gateway.pid)
            if len(pids) == workers and all(client_connections(pid, port) for pid in pids):
                break
            assert time.monotonic() < deadline, f"{len(sessions)} connections, not every worker holds one"
            session = requests.Session()
            sessions.append(session)
            headers = {"Authorization": f"Bearer {secret}", "X-Request-ID": f"warm-{len(sessions)}"}
            assert session.post(f"{gateway.url}/v1/chat/completions", json={}, headers=headers, timeout=10).ok
    finally:
        for session in sessions:
            session.close()
    return {f"warm-{n + 1}" for n in range(len(sessions))}


def test_a_graceful_stop_during_a_database_outage_loses_no_row(outage_cluster, private_pg, upstream):
    cluster = outage_cluster
    upstream.reply = lambda handler: handler.send_json(200, {"ok": True})
    secret = cluster.route_and_key(upstream.url)
    gateway = cluster.start(workers=2, GATEWAY_GRACEFUL_TIMEOUT=10)
    warm = every_worker_knows(gateway, secret, workers=2)
    traffic = Traffic(gateway.url, secret)
    answered_by(traffic, 10)  # rows are being written
    private_pg.stop()
    during = answered_by(traffic, len(traffic.answered) + 20)  # answered from the configuration in memory; rows wait
    gateway.process.send_signal(signal.SIGTERM)
    assert gateway.process.wait(30) == 0
    traffic.stop()
    log = gateway.log()
    spooled = spool_files(cluster)

    private_pg.start()
    # Two instances starting together both find the spool: each file is written once.
    cluster.start(workers=1)
    cluster.start(workers=1)
    answered = set(traffic.answered)
    rows = wait_for_rows(cluster, answered)
    print(f"graceful stop during an outage: {len(answered)} calls answered, {len(rows)} rows")
    assert during >= 30, traffic.other  # a machine too busy to answer them in 30 s fails here, not below
    assert answered <= set(rows) <= traffic.sent | warm  # a call the client gave up on may have its row too
    assert spooled and "SIGKILL" not in log, log  # the rows were spooled, not written by luck
    assert len(rows) == len(set(rows)), "a spooled row was written twice"
    assert not spool_files(cluster)


def test_a_worker_recycled_during_a_database_outage_loses_no_row(outage_cluster, private_pg, upstream):
    cluster = outage_cluster
    upstream.reply = lambda handler: handler.send_json(200, {"ok": True})
    secret = cluster.route_and_key(upstream.url)
    gateway = cluster.start(workers=1, GATEWAY_MAX_REQUESTS=30, GATEWAY_GRACEFUL_TIMEOUT=10)
    answered, statuses = set(), []

    def call(request_id):
        headers = {"Authorization": f"Bearer {secret}", "X-Request-ID": request_id}
        try:
            response = requests.post(f"{gateway.url}/v1/chat/completions", json={}, headers=headers, timeout=10)
        except requests.RequestException as exc:  # the retiring worker closed the connection
            statuses.append(type(exc).__name__)
            return
        statuses.append(response.status_code)
        if response.status_code == 200:
            answered.add(request_id)

    for i in range(10):
        call(f"before-{i}")
    private_pg.stop()
    # The worker retires after its 30th request, with the database away; its successor has no
    # configuration to serve with (503) until the database is back.
    deadline = time.monotonic() + 30
    i = 0
    while gateway.log().count("Booting worker") < 2 and time.monotonic() < deadline:
        call(f"during-{i}")
        i += 1
        time.sleep(0.05)
    assert gateway.log().count("Booting worker") == 2, statuses
    time.sleep(2)  # the retired worker has exited
    assert "request log row(s) in" in gateway.log()  # spooled
    private_pg.start()
    # The running gateway's new worker replays what the retired one spooled.
    rows = wait_for_rows(cluster, answered)
    print(f"recycling during an outage: {len(answered)} calls answered, {len(rows)} rows; {statuses}")
    assert len([r for r in answered if r.startswith("during-")]) >= 5
    assert answered <= set(rows)  # (a call refused with 503 has its row too)
    assert len(rows) == len(set(rows))
    assert not spool_files(cluster)


SPOOL_ROWS = f"""
from proxy import recording, runtime
from proxy.call import Call
rows = []
for i in range({N_SPOOLED}):
    call = Call(request_id=f"spooled-{{i}}", method="POST", path="/v1/x", client_ip="127.0.0.1")
    call.status = 200
    rows.append(recording._row(call, 1.0))
runtime.current().log_writer.spool().keep(rows)
"""
REPLAY = "from proxy import recording\nprint(recording.replay_spool())"


def replayer(cluster) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "manage.py", "shell", "--no-imports", "-c", REPLAY],
        cwd=ROOT,
        env=cluster.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_two_processes_replaying_one_spool_write_each_row_once(cluster):
    cluster.shell(SPOOL_ROWS)
    assert len(spool_files(cluster)) == 1
    replayers = [replayer(cluster) for _ in range(2)]
    outputs = [p.communicate(timeout=60) for p in replayers]
    assert all(p.returncode == 0 for p in replayers), outputs
    assert sorted(int(out) for out, _ in outputs) == [0, N_SPOOLED]
    rows = logged(cluster)
    assert sorted(rows) == sorted(f"spooled-{i}" for i in range(N_SPOOLED))
    assert not spool_files(cluster)


def test_a_replay_that_dies_before_or_after_its_commit_writes_each_row_once(cluster):
    if not cluster.env["DATABASE_URL"].startswith("postgres"):
        pytest.skip("holds a table lock to stop the replay mid-transaction: PostgreSQL")
    cluster.shell(SPOOL_ROWS)
    [path] = spool_files(cluster)
    saved = path.read_bytes()
    # Killed inside its transaction: it had claimed the file and was writing its rows.
    with (
        psycopg.connect(cluster.env["DATABASE_URL"]) as conn,
        psycopg.connect(cluster.env["DATABASE_URL"], autocommit=True) as watcher,
    ):
        conn.execute("LOCK TABLE routes_admin_requestlog IN ACCESS EXCLUSIVE MODE")
        victim = replayer(cluster)
        deadline = time.monotonic() + 30
        while True:
            waiting = watcher.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()"
            ).fetchone()[0]
            if waiting or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert waiting, "the replay never reached the log table"
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait(10)
        conn.rollback()
    assert spool_files(cluster) == [path]
    assert logged(cluster) == []
    # Dies after its commit, before removing the file: the file is found again.
    first = replayer(cluster)
    assert int(first.communicate(timeout=60)[0]) == N_SPOOLED
    path.write_bytes(saved)
    again = replayer(cluster)
    assert int(again.communicate(timeout=60)[0]) == 0
    rows = logged(cluster)
    assert sorted(rows) == sorted(f"spooled-{i}" for i in range(N_SPOOLED))
    assert not spool_files(cluster)
    shutil.rmtree(cluster.env["GATEWAY_LOG_SPOOL_DIR"], ignore_errors=True)
