"""Asynchronous calls (jobs) with real processes: gunicorn gateways, `manage.py jobs_worker`
processes, a real upstream and a real webhook receiver, sharing one database (SQLite file, or PostgreSQL and Redis
when DATABASE_URL / REDIS_URL are set).
"""

import hashlib
import hmac
import json
import signal
import subprocess
import sys
import threading
import time

import pytest
import requests

from tests.servers import ROOT
from tests.upstream import UpstreamServer, json_reply

pytestmark = pytest.mark.slow

SECRET = "workers-webhook-secret"
FAST = {
    "GATEWAY_JOB_LEASE_SECONDS": "3",
    "GATEWAY_JOB_POLL_SECONDS": "0.2",
    "GATEWAY_JOB_WAIT_SECONDS": "0.2",
    "GATEWAY_JOB_SHUTDOWN_SECONDS": "10",
    "GATEWAY_WEBHOOK_SECRET": SECRET,
    "GATEWAY_WEBHOOK_BACKOFF_SECONDS": "0.2",
}
BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


class Workers:
    """`manage.py jobs_worker` processes in the cluster's environment."""

    def __init__(self, cluster):
        self.cluster = cluster
        self.processes: list[subprocess.Popen] = []

    def start(self, **env) -> subprocess.Popen:
        log = open(self.cluster.tmp_path / f"worker-{len(self.processes)}.log", "wb")
        process = subprocess.Popen(
            [sys.executable, "manage.py", "jobs_worker"],
            cwd=ROOT,
            env={**self.cluster.env, **FAST, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.processes.append(process)
        return process

    def stop_all(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
            process.wait()


@pytest.fixture
def receiver():
    """A webhook receiver, on the cluster's webhook allow-list (host and port)."""
    server = UpstreamServer()
    yield server
    server.stop()


@pytest.fixture
def jobs_cluster(cluster, upstream, receiver):
    cluster.env.update(FAST, GATEWAY_WEBHOOK_HOSTS=f"127.0.0.1:{receiver.port}")
    secret = cluster.route_and_key(upstream.url)
    gateway = cluster.start(workers=2)
    workers = Workers(cluster)
    yield cluster, gateway, workers, secret
    workers.stop_all()


def submit(gateway, secret, **headers):
    return requests.post(
        f"{gateway.url}/v1/chat/completions",
        json=BODY,
        headers={"Authorization": f"Bearer {secret}", "Prefer": "respond-async", **headers},
        timeout=10,
    )


def wait_for(gateway, secret, job_id, statuses=("succeeded", "failed"), timeout=30.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        document = requests.get(f"{gateway.url}/jobs/{job_id}", headers={"Authorization": f"Bearer {secret}"}).json()
        if document["status"] in statuses or time.monotonic() > deadline:
            return document
        time.sleep(0.1)


def test_submit_poll_cancel_idempotency_and_a_verified_webhook(jobs_cluster, upstream, receiver):
    cluster, gateway, workers, secret = jobs_cluster
    upstream.reply = json_reply({"id": "done", "usage": {"total_tokens": 5}})
    verified = []
    signing_secret = requests.get(
        f"{gateway.url}/jobs/webhook-secret", headers={"Authorization": f"Bearer {secret}"}, timeout=10
    ).json()["secret"]

    def receive(handler):
        received = handler.received
        stamp = received.headers["x-gateway-timestamp"]
        message = f"{stamp}\n{receiver.url}/cb\n".encode() + received.body
        mac = hmac.new(signing_secret.encode(), message, hashlib.sha256).hexdigest()
        if hmac.compare_digest(f"sha256={mac}", received.headers["x-gateway-signature"]):
            verified.append(json.loads(received.body))
            return handler.send_json(200, {})
        handler.send_json(401, {})

    receiver.reply = receive
    try:
        doomed = submit(gateway, secret).json()["id"]  # no worker yet: it stays queued
        cancelled = requests.delete(f"{gateway.url}/jobs/{doomed}", headers={"Authorization": f"Bearer {secret}"})
        assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"

        first = submit(gateway, secret, **{"Idempotency-Key": "k1", "X-Callback-URL": f"{receiver.url}/cb"})
        again = submit(gateway, secret, **{"Idempotency-Key": "k1", "X-Callback-URL": f"{receiver.url}/cb"})
        assert first.status_code == again.status_code == 202
        job_id = first.json()["id"]
        assert again.json()["id"] == job_id and first.headers["Location"] == f"/jobs/{job_id}"

        workers.start()
        done = wait_for(gateway, secret, job_id)
        assert done["status"] == "succeeded", done
        assert done["response"]["body"]["id"] == "done"
        deadline = time.monotonic() + 10
        while not verified and time.monotonic() < deadline:
            time.sleep(0.1)
        assert [d["id"] for d in verified] == [job_id]
        assert len(upstream.requests) == 1  # the cancelled job and the replay never ran
        assert wait_for(gateway, secret, doomed, statuses=("cancelled",))["status"] == "cancelled"
    finally:
        receiver.stop()


def test_a_job_whose_worker_is_killed_mid_call_is_finished_once_by_another_worker(jobs_cluster, upstream):
    cluster, gateway, workers, secret = jobs_cluster
    release = threading.Event()

    def reply(handler):
        if len(upstream.requests) == 1:
            release.wait(15)  # the first run hangs until its worker is gone
        handler.send_json(200, {"id": f"run-{len(upstream.requests)}"})

    upstream.reply = reply
    doomed_worker = workers.start()
    job_id = submit(gateway, secret).json()["id"]
    deadline = time.monotonic() + 20
    while not upstream.requests and time.monotonic() < deadline:
        time.sleep(0.05)
    assert upstream.requests, "the first worker never forwarded the job"
    doomed_worker.send_signal(signal.SIGKILL)
    doomed_worker.wait()
    release.set()

    workers.start()
    done = wait_for(gateway, secret, job_id)
    assert done["status"] == "succeeded", done
    assert done["attempts"] == 2
    assert done["response"]["body"] == {"id": "run-2"}
    rows = cluster.shell(
        "from routes_admin.models import RequestLog\n"
        f"print(list(RequestLog.objects.filter(job_id='{job_id}').values_list('status', flat=True)))"
    )
    assert rows.strip() == "[200]"  # finished once: one run recorded (the killed one never ended)


def test_sigterm_lets_the_running_job_finish_before_the_worker_exits(jobs_cluster, upstream):
    cluster, gateway, workers, secret = jobs_cluster

    def slow(handler):
        time.sleep(1.0)
        handler.send_json(200, {"id": "slow"})

    upstream.reply = slow
    worker = workers.start()
    job_id = submit(gateway, secret).json()["id"]
    deadline = time.monotonic() + 20
    while not upstream.requests and time.monotonic() < deadline:
        time.sleep(0.05)
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=15) == 0
    done = wait_for(gateway, secret, job_id, timeout=2)
    assert done["status"] == "succeeded" and done["attempts"] == 1


def test_a_job_outliving_the_shutdown_timeout_goes_back_to_the_queue_at_once(jobs_cluster, upstream):
    cluster, gateway, workers, secret = jobs_cluster
    release = threading.Event()

    def reply(handler):
        if len(upstream.requests) == 1:
            release.wait(15)  # the first run outlives its worker's shutdown timeout
        handler.send_json(200, {"id": f"run-{len(upstream.requests)}"})

    upstream.reply = reply
    worker = workers.start(GATEWAY_JOB_SHUTDOWN_SECONDS="0.5", GATEWAY_JOB_LEASE_SECONDS="60")
    job_id = submit(gateway, secret).json()["id"]
    deadline = time.monotonic() + 20
    while not upstream.requests and time.monotonic() < deadline:
        time.sleep(0.05)
    worker.send_signal(signal.SIGTERM)
    worker.wait(timeout=15)
    # Queued again at once, not after its (here 60 s) lease: the next worker takes it now.
    assert wait_for(gateway, secret, job_id, statuses=("queued",), timeout=2)["status"] == "queued"
    release.set()
    workers.start()
    done = wait_for(gateway, secret, job_id)
    assert done["status"] == "succeeded" and done["attempts"] == 2
    assert done["response"]["body"] == {"id": "run-2"}


def test_a_route_cap_of_two_is_never_exceeded_with_twenty_jobs_queued(jobs_cluster, upstream):
    cluster, gateway, workers, secret = jobs_cluster
    cluster.shell("from routes_admin.models import Route\nRoute.objects.update(max_concurrent_jobs=2)")
    lock = threading.Lock()
    state = {"now": 0, "max": 0}

    def counted(handler):
        with lock:
            state["now"] += 1
            state["max"] = max(state["max"], state["now"])
        time.sleep(0.2)
        with lock:
            state["now"] -= 1
        handler.send_json(200, {"ok": True})

    upstream.reply = counted
    ids = [submit(gateway, secret).json()["id"] for _ in range(20)]
    for _ in range(4):
        workers.start()
    finished = [wait_for(gateway, secret, job_id, timeout=60)["status"] for job_id in ids]
    assert finished == ["succeeded"] * 20
    # At least once: a worker too slow to renew its lease on a loaded machine may see its job run twice.
    assert len(upstream.requests) >= 20
    assert state["max"] == 2  # four workers, yet never more than two of the route's jobs at once
