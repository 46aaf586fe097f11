"""A job keeps at most GATEWAY_JOB_MAX_ANSWER_BYTES of its upstream's answer: past that the job
fails with the reason, is not run again, and the worker's memory stays flat however much the
upstream sends.
"""

import json
import subprocess
import sys
import time

import pytest
import requests
from django.test import override_settings

from jobs.models import Job, Status
from routes_admin.models import RequestLog
from tests.factories import make_key, make_route, make_target
from tests.jobs.test_jobs import poll, submit, work_off
from tests.servers import ROOT

CHUNK = b"x" * 65536


def endless(most_bytes: int):
    """A chunked answer that goes on until the client hangs up (or `most_bytes`, a safety stop)."""

    def reply(handler):
        handler.start_chunked(content_type="application/json")
        sent = 0
        try:
            while sent < most_bytes:
                handler.send_chunk(CHUNK)
                sent += len(CHUNK)
            handler.end_chunked()
        except OSError:
            pass  # the gateway stopped reading and closed the connection

    return reply


@pytest.mark.django_db(transaction=True)
@override_settings(GATEWAY_JOB_MAX_ANSWER_BYTES=256 * 1024, GATEWAY_JOB_MAX_ATTEMPTS=3)
def test_an_answer_over_the_limit_fails_the_job_once_with_the_reason(client, upstream):
    upstream.reply = endless(most_bytes=32 * 1024 * 1024)
    route = make_route(name="big")
    make_target(route, upstream.url)
    _, secret = make_key(routes=[route])
    _, body = submit(client, secret)
    job_id = json.loads(body)["id"]
    work_off()
    done = poll(client, secret, job_id)
    assert done["status"] == "failed", done
    assert "upstream_answer_too_large" in done["error"] and "262144 bytes" in done["error"]
    assert done["attempts"] == 1 and len(upstream.requests) == 1  # not run again
    assert Job.objects.get().response_body is None
    row = RequestLog.objects.get(job_id__isnull=False)
    assert row.error_type == "upstream_answer_too_large"
    assert row.bytes_out < 2 * 256 * 1024  # reading stopped near the limit


@pytest.mark.django_db(transaction=True)
@override_settings(GATEWAY_JOB_MAX_ANSWER_BYTES=256 * 1024)
def test_an_answer_at_the_limit_is_kept_whole(client, upstream):
    upstream.reply = endless(most_bytes=4 * len(CHUNK))  # exactly 256 KiB, then the end
    route = make_route(name="big")
    make_target(route, upstream.url)
    _, secret = make_key(routes=[route])
    _, body = submit(client, secret)
    work_off()
    job = Job.objects.get()
    assert job.status == Status.SUCCEEDED
    assert bytes(job.response_body) == CHUNK * 4


def rss_kib(pid: int, field: str) -> int:
    """VmRSS (now) or VmHWM (the peak) of a process, in KiB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise LookupError(field)


@pytest.mark.slow
def test_a_worker_reading_an_endless_answer_stays_within_the_limit(cluster, upstream, capsys):
    """A real `jobs_worker` process against an upstream that never ends its answer: its peak
    resident memory grows by about the limit, not by what the upstream sends (the safety stop,
    256 MiB, is far above)."""
    limit = 8 * 1024 * 1024
    upstream.reply = endless(most_bytes=256 * 1024 * 1024)
    env = {"GATEWAY_JOB_MAX_ANSWER_BYTES": str(limit), "GATEWAY_JOB_POLL_SECONDS": "0.1"}
    cluster.env.update(env)
    secret = cluster.route_and_key(upstream.url)
    gateway = cluster.start()
    log = open(cluster.tmp_path / "worker.log", "wb")
    worker = subprocess.Popen(
        [sys.executable, "manage.py", "jobs_worker"], cwd=ROOT, env=cluster.env, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 60
        while b"gateway.jobs jobs worker" not in (cluster.tmp_path / "worker.log").read_bytes():
            assert time.monotonic() < deadline and worker.poll() is None, "the worker did not start"
            time.sleep(0.2)
        time.sleep(1)  # started and idle: its baseline
        before = rss_kib(worker.pid, "VmRSS")
        answer = requests.post(
            f"{gateway.url}/v1/chat/completions",
            json={"model": "m", "messages": []},
            headers={"Authorization": f"Bearer {secret}", "Prefer": "respond-async"},
            timeout=10,
        )
        job_id = answer.json()["id"]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            document = requests.get(
                f"{gateway.url}/jobs/{job_id}", headers={"Authorization": f"Bearer {secret}"}, timeout=5
            ).json()
            if document["status"] in ("succeeded", "failed"):
                break
            time.sleep(0.2)
        peak = rss_kib(worker.pid, "VmHWM")
        with capsys.disabled():
            print(f"\njobs_worker RSS: {before / 1024:.0f} MiB idle, peak {peak / 1024:.0f} MiB (limit 8 MiB)")
        assert document["status"] == "failed" and "upstream_answer_too_large" in document["error"], document
        assert (peak - before) * 1024 < 4 * limit
    finally:
        worker.kill()
        worker.wait()
        log.close()
