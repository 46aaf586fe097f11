"""Jobs workers and /metrics through a PostgreSQL outage, on a private PostgreSQL server started
for the test (tests/private_postgres.py) and stopped in the middle: a worker logs the outage,
keeps trying with backoff, never exits, and runs jobs again once the database is back; /metrics
answers at once while the database is down.
"""

import threading
import time

import pytest
import requests

from tests.servers import GatewayCluster
from tests.upstream import UpstreamServer, json_reply

pytestmark = pytest.mark.slow

FAST = {"GATEWAY_JOB_LEASE_SECONDS": "3", "GATEWAY_JOB_POLL_SECONDS": "0.2", "GATEWAY_JOB_WAIT_SECONDS": "0.2"}


def submit_and_wait(gateway, secret, timeout: float = 30.0) -> dict:
    headers = {"Authorization": f"Bearer {secret}"}
    deadline = time.monotonic() + timeout
    while True:  # the gateway's own connections may take a moment to come back after an outage
        accepted = requests.post(
            f"{gateway.url}/v1/chat/completions",
            json={"model": "m", "messages": []},
            headers={**headers, "Prefer": "respond-async"},
            timeout=10,
        )
        if accepted.status_code == 202 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert accepted.status_code == 202, accepted.text
    job_id = accepted.json()["id"]
    while True:
        document = requests.get(f"{gateway.url}/jobs/{job_id}", headers=headers, timeout=10).json()
        if document["status"] in ("succeeded", "failed") or time.monotonic() > deadline:
            return document
        time.sleep(0.2)


def test_a_worker_survives_a_database_outage_and_metrics_answer_at_once(private_pg, upstream, tmp_path, monkeypatch):
    upstream.reply = json_reply({"id": "answer"})
    monkeypatch.setenv("DATABASE_URL", private_pg.url())
    cluster = GatewayCluster(tmp_path, **FAST)
    log_path = tmp_path / "worker.log"
    worker = None
    try:
        secret = cluster.route_and_key(upstream.url)
        gateway = cluster.start()
        worker = cluster.start_jobs_worker(log_path)
        assert submit_and_wait(gateway, secret)["status"] == "succeeded"

        private_pg.stop()
        # The worker notices at its next poll or beat; a loaded machine may take a while to get there.
        deadline = time.monotonic() + 30
        while "the database failed" not in log_path.read_text() and time.monotonic() < deadline:
            time.sleep(0.5)
        time.sleep(3)  # a few backoff rounds without a database
        assert worker.poll() is None, log_path.read_text()
        assert "the database failed" in log_path.read_text()
        started = time.monotonic()
        metrics = requests.get(f"{gateway.url}/metrics", timeout=30)
        waited = time.monotonic() - started
        assert metrics.status_code == 200 and "gateway_job_queue_depth" in metrics.text
        print(f"/metrics answered in {waited:.2f} s with the database down")
        assert waited < 5, f"/metrics took {waited:.1f} s with the database down"  # was 11 s

        private_pg.start()
        assert submit_and_wait(gateway, secret, timeout=60)["status"] == "succeeded"
        assert worker.poll() is None  # the same worker, never restarted
    finally:
        if worker is not None:
            worker.kill()
            worker.wait()
        cluster.close()


def test_a_job_answered_during_an_outage_is_run_once(private_pg, upstream, tmp_path, monkeypatch):
    """A job whose upstream answers while the database is away: its worker keeps the answer and
    writes it once the database is back, and no keeper takes the job for lost meanwhile although
    the outage outlasted its lease, so the upstream is called once. Before, the answer was dropped
    and the job ran again (bench/faults.py: 3 of 47 jobs running at a 20 s outage)."""
    arrived, answer = threading.Event(), threading.Event()

    def reply(handler):
        arrived.set()
        answer.wait(60)  # until the database is down
        handler.send_json(200, {"id": "once"})

    upstream.reply = reply
    monkeypatch.setenv("DATABASE_URL", private_pg.url())
    cluster = GatewayCluster(tmp_path, **FAST)
    workers = []
    try:
        secret = cluster.route_and_key(upstream.url)
        gateway = cluster.start()
        for n in range(2):  # the one running the job, and one that could take it for lost
            workers.append(cluster.start_jobs_worker(tmp_path / f"worker-{n}.log"))
        headers = {"Authorization": f"Bearer {secret}"}
        accepted = requests.post(
            f"{gateway.url}/v1/chat/completions",
            json={"model": "m", "messages": []},
            headers={**headers, "Prefer": "respond-async"},
            timeout=10,
        )
        assert accepted.status_code == 202, accepted.text
        assert arrived.wait(30), "no worker ran the job"
        private_pg.stop()
        answer.set()
        time.sleep(2 * float(FAST["GATEWAY_JOB_LEASE_SECONDS"]) + 1)  # the outage outlasts the lease
        private_pg.start()
        deadline = time.monotonic() + 60  # a bound, not a measurement
        while True:
            try:
                document = requests.get(f"{gateway.url}/jobs/{accepted.json()['id']}", headers=headers, timeout=10)
            except requests.RequestException:
                document = None
            if (
                document is not None
                and document.status_code == 200
                and document.json()["status"] in ("succeeded", "failed")
            ):
                break
            assert time.monotonic() < deadline, "the job never ended"
            time.sleep(0.5)
        logs = "".join(path.read_text() for path in tmp_path.glob("worker-*.log"))
        assert document.json()["status"] == "succeeded", document.json()
        assert document.json()["response"]["body"] == {"id": "once"}
        assert len(upstream.requests) == 1, logs
        assert "kept, written when it is back" in logs
        assert all(worker.poll() is None for worker in workers)
    finally:
        for worker in workers:
            worker.kill()
            worker.wait()
        cluster.close()


def test_job_submissions_and_polls_answer_503_at_once_while_the_database_is_away(
    private_pg, upstream, tmp_path, monkeypatch
):
    """With the database away, a job submission, a poll of a job and the webhook secret answer 503
    in the JSON shape, within GATEWAY_CONFIG_DB_TIMEOUT rather than the pool's timeout (here 120 s,
    longer than the client waits). Before, a poll answered 500 after DATABASE_POOL_TIMEOUT and a
    submission its 503 after it (a fault run: 11 polls answered 500, 503s took 11 s)."""
    monkeypatch.setenv("DATABASE_URL", private_pg.url())
    cluster = GatewayCluster(
        tmp_path, DATABASE_POOL_TIMEOUT=120, GATEWAY_WEBHOOK_HOSTS="127.0.0.1:9", GATEWAY_WEBHOOK_SECRET="s", **FAST
    )
    try:
        secret = cluster.route_and_key(upstream.url)
        gateway = cluster.start()
        headers = {"Authorization": f"Bearer {secret}"}

        def submit():
            return requests.post(
                f"{gateway.url}/v1/chat/completions",
                json={"model": "m", "messages": []},
                headers={**headers, "Prefer": "respond-async"},
                timeout=30,
            )

        job_id = submit().json()["id"]
        private_pg.stop()
        answers = {
            "submission": submit(),
            "poll": requests.get(f"{gateway.url}/jobs/{job_id}", headers=headers, timeout=30),
            "secret": requests.get(f"{gateway.url}/jobs/webhook-secret", headers=headers, timeout=30),
        }
        for name, answer in answers.items():
            assert answer.status_code == 503, (name, answer.status_code, answer.text)
            assert answer.json()["error"]["type"] == "service_unavailable", name
        private_pg.start()
        deadline = time.monotonic() + 30  # the pool connects again: a bound, not a measurement
        while (poll := requests.get(f"{gateway.url}/jobs/{job_id}", headers=headers, timeout=30)).status_code == 503:
            assert time.monotonic() < deadline, "polls never answered again"
            time.sleep(0.5)
        assert poll.status_code == 200 and poll.json()["id"] == job_id
    finally:
        cluster.close()


def test_a_webhook_delivered_during_an_outage_is_recorded_once_the_database_is_back(
    private_pg, upstream, tmp_path, monkeypatch
):
    """A webhook whose receiver answers while the database is away: the worker keeps the attempt's
    record and writes it once the database is back, so the job shows it delivered and the receiver
    gets it once. Before, the record was lost and the delivery's task stayed RUNNING for ever (its
    worker kept beating), so the job showed no delivery at all."""
    arrived, answer = threading.Event(), threading.Event()
    receiver = UpstreamServer()

    def receive(handler):
        arrived.set()
        answer.wait(60)  # until the database is down
        handler.send_json(200, {})

    receiver.reply = receive
    upstream.reply = json_reply({"id": "done"})
    monkeypatch.setenv("DATABASE_URL", private_pg.url())
    hooks = {"GATEWAY_WEBHOOK_HOSTS": f"127.0.0.1:{receiver.port}", "GATEWAY_WEBHOOK_SECRET": "outage-secret"}
    cluster = GatewayCluster(tmp_path, **FAST, **hooks)
    workers = []
    try:
        secret = cluster.route_and_key(upstream.url)
        gateway = cluster.start()
        for n in range(2):
            workers.append(cluster.start_jobs_worker(tmp_path / f"worker-{n}.log"))
        headers = {"Authorization": f"Bearer {secret}"}
        accepted = requests.post(
            f"{gateway.url}/v1/chat/completions",
            json={"model": "m", "messages": []},
            headers={**headers, "Prefer": "respond-async", "X-Callback-URL": f"{receiver.url}/hook"},
            timeout=10,
        )
        assert accepted.status_code == 202, accepted.text
        assert arrived.wait(30), "the webhook never came"
        private_pg.stop()
        answer.set()
        time.sleep(2 * float(FAST["GATEWAY_JOB_LEASE_SECONDS"]) + 1)
        private_pg.start()
        deadline = time.monotonic() + 60  # a bound, not a measurement
        while True:
            try:
                poll = requests.get(f"{gateway.url}/jobs/{accepted.json()['id']}", headers=headers, timeout=10)
                deliveries = poll.json().get("webhook_deliveries") if poll.status_code == 200 else None
            except requests.RequestException:
                deliveries = None
            if deliveries:
                break
            assert time.monotonic() < deadline, "the delivery was never recorded"
            time.sleep(0.5)
        assert [(d["attempt"], d["delivered"], d["status"]) for d in deliveries] == [(1, True, 200)]
        assert len(receiver.requests) == 1
    finally:
        for worker in workers:
            worker.kill()
            worker.wait()
        cluster.close()
        receiver.stop()
