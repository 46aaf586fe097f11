"""Asynchronous calls (jobs), in one process: the test client submits, an in-process
worker (the jobs worker's loop, batch mode) runs the queue, a real upstream answers.

The multi-process cases (real gunicorn, real workers, SIGKILL, the route cap under load) are in
tests/jobs/test_jobs_workers.py.
"""

import hashlib
import hmac
import json
import threading
import time
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db import OperationalError, connection
from django.test import override_settings
from django.utils import timezone

from jobs import leases, queue
from jobs.management.commands.jobs_worker import JobWorker
from jobs.models import Job, Status, WebhookDelivery
from proxy import breaker
from routes_admin.models import KeyUsage, RequestLog
from tests.factories import auth, make_key, make_route, make_target
from tests.servers import free_port
from tests.upstream import UpstreamServer, json_reply

# The in-process worker manages its own transactions and connections, as a worker process does.
pytestmark = pytest.mark.django_db(transaction=True)

USAGE = {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
BODY = b'{"model": "m", "messages": [{"role": "user", "content": "hi"}]}'
WEBHOOK_SECRET = "webhook-test-secret"


def drain(response) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else response.content


def submit(client, secret, body=BODY, path="/v1/chat/completions", **headers):
    response = client.post(
        path, body, content_type="application/json", HTTP_PREFER="respond-async", **headers, **auth(secret)
    )
    return response, drain(response)


def work_off(max_tasks: int = 50) -> None:
    """Run every task that is due now, as a worker would, then return."""
    JobWorker(
        queue_names=["webhooks"],
        interval=0,
        batch=True,
        backend_name="default",
        startup_delay=False,
        max_tasks=max_tasks,
        worker_id="test-worker",
        excluded_queue_names=[],
    ).run()


def poll(client, secret, job_id) -> dict:
    response = client.get(f"/jobs/{job_id}", **auth(secret))
    assert response.status_code == 200, response.content
    return response.json()


@pytest.fixture
def setup(upstream):
    upstream.reply = json_reply({"id": "answer", "usage": USAGE})
    route = make_route(name="chat")
    make_target(route, upstream.url, name="gpu")
    key, secret = make_key(routes=[route])
    return route, key, secret


def test_a_call_with_prefer_respond_async_is_queued_then_run_and_its_result_polled(client, upstream, setup):
    route, key, secret = setup
    response, body = submit(client, secret, HTTP_X_REQUEST_ID="job-req-1")
    assert response.status_code == 202
    document = json.loads(body)
    assert document["status"] == "queued" and document["object"] == "job"
    assert response["Location"] == f"/jobs/{document['id']}"
    assert upstream.requests == []  # nothing forwarded yet

    assert poll(client, secret, document["id"])["status"] == "queued"
    work_off()

    done = poll(client, secret, document["id"])
    assert done["status"] == "succeeded"
    assert done["attempts"] == 1
    assert done["created"] <= done["started"] <= done["finished"]
    assert done["response"]["status"] == 200
    assert done["response"]["body"] == {"id": "answer", "usage": USAGE}
    assert ["Content-Type", "application/json"] in done["response"]["headers"]
    sent = upstream.last
    assert sent.body == BODY and sent.path == "/chat/completions"
    assert "authorization" not in sent.headers and "prefer" not in sent.headers
    assert sent.headers["x-request-id"] == "job-req-1"

    # Two log rows: the submission (202) and the job's run, marked as a job with its queue wait.
    accepted, ran = RequestLog.objects.order_by("created")
    assert (accepted.status, accepted.job_id) == (202, None)
    assert str(ran.job_id) == document["id"] and ran.status == 200 and ran.queue_ms >= 0
    assert ran.total_tokens == 7
    # The request counted once (at acceptance), the tokens when the answer came.
    usage = KeyUsage.objects.get(api_key=key)
    assert (usage.requests, usage.total_tokens) == (1, 7)


def test_a_streamed_answer_is_stored_whole(client, upstream, setup):
    route, key, secret = setup

    def stream(handler):
        handler.start_chunked()
        for piece in (b"data: one\n\n", b"data: two\n\n", b"data: [DONE]\n\n"):
            handler.send_chunk(piece)
        handler.end_chunked()

    upstream.reply = stream
    _, body = submit(client, secret)
    work_off()
    done = poll(client, secret, json.loads(body)["id"])
    assert done["response"]["body"] == "data: one\n\ndata: two\n\ndata: [DONE]\n\n"  # a stream it cannot assemble
    assert done["response"]["events"] == ["one", "two", "[DONE]"]


def test_an_async_route_queues_calls_without_the_header_and_a_sync_only_route_refuses_it(client, upstream):
    make_target(make_route(name="batch", path_prefix="/batch", processing_mode="async"), upstream.url)
    make_target(make_route(name="live", path_prefix="/live", processing_mode="sync-only"), upstream.url)
    _, secret = make_key(all_routes=True)
    response = client.post("/batch/embeddings", BODY, content_type="application/json", **auth(secret))
    drain(response)
    assert response.status_code == 202
    response, body = submit(client, secret, path="/live/chat")
    assert response.status_code == 400
    assert json.loads(body)["error"]["type"] == "invalid_request_error"
    assert Job.objects.count() == 1 and upstream.requests == []


def test_a_queued_job_can_be_cancelled_and_never_runs(client, upstream, setup):
    _, _, secret = setup
    _, body = submit(client, secret)
    job_id = json.loads(body)["id"]
    response = client.delete(f"/jobs/{job_id}", **auth(secret))
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    work_off()
    assert upstream.requests == []
    assert poll(client, secret, job_id)["status"] == "cancelled"
    again = client.delete(f"/jobs/{job_id}", **auth(secret))
    assert again.status_code == 409 and again.json()["error"]["type"] == "conflict"


def test_only_the_key_that_created_a_job_sees_it(client, setup):
    route, _, secret = setup
    _, other = make_key(routes=[route])
    _, body = submit(client, secret)
    job_id = json.loads(body)["id"]
    for method in (client.get, client.delete):
        response = method(f"/jobs/{job_id}", **auth(other))
        assert response.status_code == 404 and response.json()["error"]["type"] == "not_found"
    assert client.get(f"/jobs/{job_id}").status_code == 401
    assert Job.objects.get().status == Status.QUEUED


@pytest.mark.parametrize("job_id", ["not-a-uuid", "00000000-0000-0000-0000-000000000000", "%00", "x" * 300])
def test_an_unknown_or_malformed_job_id_is_a_json_404(client, setup, job_id):
    _, _, secret = setup
    response = client.get(f"/jobs/{job_id}", **auth(secret))
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "not_found"


def test_an_idempotency_key_returns_the_same_job_per_api_key_within_its_window(client, upstream, setup):
    route, _, secret = setup
    _, other = make_key(routes=[route])
    first, body1 = submit(client, secret, HTTP_IDEMPOTENCY_KEY="order-42")
    second, body2 = submit(client, secret, HTTP_IDEMPOTENCY_KEY="order-42")
    assert first.status_code == second.status_code == 202
    assert json.loads(body1)["id"] == json.loads(body2)["id"]
    assert second["Idempotent-Replayed"] == "true"
    _, body3 = submit(client, other, HTTP_IDEMPOTENCY_KEY="order-42")  # another API key: its own job
    assert json.loads(body3)["id"] != json.loads(body1)["id"]
    work_off()
    assert len(upstream.requests) == 2
    with override_settings(GATEWAY_JOB_IDEMPOTENCY_SECONDS=0):  # the window is over: a new job
        _, body4 = submit(client, secret, HTTP_IDEMPOTENCY_KEY="order-42")
    assert json.loads(body4)["id"] not in (json.loads(body1)["id"], json.loads(body3)["id"])
    assert Job.objects.count() == 3


def test_a_body_over_the_route_limit_is_413_and_nothing_is_queued(client, upstream):
    route = make_route(name="small", max_body_bytes=10)
    make_target(route, upstream.url)
    _, secret = make_key(routes=[route])
    response, body = submit(client, secret)
    assert response.status_code == 413
    assert json.loads(body)["error"]["type"] == "request_too_large"
    assert Job.objects.count() == 0


@override_settings(GATEWAY_WEBHOOK_HOSTS=["hooks.example.com"], GATEWAY_WEBHOOK_SECRET=WEBHOOK_SECRET)
@pytest.mark.parametrize("url", ["http://evil.example.net/hook", "ftp://hooks.example.com/x", "not a url"])
def test_a_callback_url_off_the_allow_list_is_400_and_nothing_is_queued(client, setup, url):
    _, _, secret = setup
    response, body = submit(client, secret, HTTP_X_CALLBACK_URL=url)
    assert response.status_code == 400
    assert json.loads(body)["error"]["type"] == "invalid_request_error"
    assert Job.objects.count() == 0


def test_a_queue_that_is_down_gives_503_and_leaves_nothing_half_created(client, setup):
    _, _, secret = setup

    def queue_unreachable(execute, sql, params, many, context):
        if sql.startswith('INSERT INTO "jobs_job"'):
            raise OperationalError("the queue's table cannot be written")
        return execute(sql, params, many, context)

    with connection.execute_wrapper(queue_unreachable):
        response, body = submit(client, secret)
    assert response.status_code == 503
    error = json.loads(body)["error"]
    assert error["type"] == "service_unavailable" and "nothing was queued" in error["message"]
    assert Job.objects.count() == 0
    assert RequestLog.objects.get().status == 503


def test_a_job_whose_targets_are_all_open_waits_and_runs_later(client, upstream, setup):
    route, _, secret = setup
    target = route.targets.get()
    breaker._open(target.id, time.time())
    _, body = submit(client, secret)
    job_id = json.loads(body)["id"]
    work_off()
    job = Job.objects.get()
    assert (job.status, job.attempts) == (Status.QUEUED, 0)  # waiting, not failed, no attempt used
    assert upstream.requests == []
    assert job.due > timezone.now()  # due when the cooldown ends

    breaker.record_success(target.id, target.name, probe=True)  # the target is healthy again
    Job.objects.filter(id=job_id).update(due=timezone.now())  # ...and that time has come
    work_off()
    assert poll(client, secret, job_id)["status"] == "succeeded"
    assert len(upstream.requests) == 1


@override_settings(GATEWAY_JOB_MAX_ATTEMPTS=2, GATEWAY_JOB_WAIT_SECONDS=0)
def test_an_unreachable_upstream_is_retried_up_to_the_attempts_then_fails_with_its_reason(client):
    route = make_route(name="down", max_attempts=1)
    make_target(route, f"http://127.0.0.1:{free_port()}")
    _, secret = make_key(routes=[route])
    _, body = submit(client, secret)
    work_off()
    done = poll(client, secret, json.loads(body)["id"])
    assert done["status"] == "failed" and done["attempts"] == 2
    assert "502 upstream_unavailable" in done["error"] and "attempt 2 of 2" in done["error"]
    assert RequestLog.objects.filter(job_id__isnull=False, status=502).count() == 2


def test_a_job_whose_worker_died_is_run_again_by_another_worker(client, upstream, setup):
    _, _, secret = setup
    _, body = submit(client, secret)
    job_id = json.loads(body)["id"]
    assert str(queue.claim_next("dead-worker").id) == job_id  # claimed, then the process is "killed"

    assert leases.recover_lost() == 0  # its lease still runs: nobody takes it over
    work_off()
    assert upstream.requests == []

    later = timezone.now() + timedelta(seconds=31)  # past GATEWAY_JOB_LEASE_SECONDS
    assert leases.recover_lost(now=later) == 1
    work_off()
    done = poll(client, secret, job_id)
    assert done["status"] == "succeeded" and done["attempts"] == 2
    assert len(upstream.requests) == 1
    assert Job.objects.get().worker == "test-worker"


@override_settings(GATEWAY_JOB_MAX_ATTEMPTS=1)
def test_a_job_whose_worker_died_on_its_last_attempt_fails_with_the_reason(client, setup):
    _, _, secret = setup
    _, body = submit(client, secret)
    job_id = json.loads(body)["id"]
    queue.claim_next("dead-worker")
    leases.recover_lost(now=timezone.now() + timedelta(seconds=31))
    done = poll(client, secret, job_id)
    assert done["status"] == "failed"
    assert "dead-worker" in done["error"] and "no attempts left" in done["error"]


def test_a_job_over_its_routes_cap_waits_in_the_queue(client, upstream, setup):
    route, _, secret = setup
    route.max_concurrent_jobs = 1
    route.save()
    _, body1 = submit(client, secret)
    _, body2 = submit(client, secret)
    first, second = json.loads(body1)["id"], json.loads(body2)["id"]
    assert str(queue.claim_next("busy-worker").id) == first  # one job of the route is running elsewhere
    work_off()
    waiting = Job.objects.get(id=second)
    assert (waiting.status, waiting.attempts) == (Status.QUEUED, 0)
    assert upstream.requests == []


class Receiver(UpstreamServer):
    """A webhook receiver at /hook that verifies each POST's signature as the README says, with
    `secret` (the key's signing secret, set by the test)."""

    def __init__(self, fail_first: int = 0):
        super().__init__()
        self.verified: list[dict] = []
        self.fail_first = fail_first
        self.reply = self.receive
        self.hook = f"{self.url}/hook"
        self.secret = ""

    def receive(self, handler):
        received = handler.received
        timestamp = received.headers["x-gateway-timestamp"]
        message = f"{timestamp}\n{self.hook}\n".encode() + received.body
        expected = hmac.new(self.secret.encode(), message, hashlib.sha256)
        good = hmac.compare_digest("sha256=" + expected.hexdigest(), received.headers["x-gateway-signature"])
        fresh = abs(time.time() - int(timestamp)) < 300
        if not (good and fresh):
            return handler.send_json(401, {"error": "bad signature"})
        if len(self.requests) <= self.fail_first:
            return handler.send_json(500, {"error": "try later"})
        self.verified.append(json.loads(received.body))
        handler.send_json(200, {"ok": True})


def test_a_webhook_is_signed_retried_and_every_attempt_is_on_the_job(client, setup):
    receiver = Receiver(fail_first=1)
    try:
        with override_settings(
            GATEWAY_WEBHOOK_HOSTS=[f"127.0.0.1:{receiver.port}"],
            GATEWAY_WEBHOOK_SECRET=WEBHOOK_SECRET,
            GATEWAY_WEBHOOK_BACKOFF_SECONDS=0,
        ):
            _, _, secret = setup
            receiver.secret = client.get("/jobs/webhook-secret", **auth(secret)).json()["secret"]
            _, body = submit(client, secret, HTTP_X_CALLBACK_URL=receiver.hook)
            job_id = json.loads(body)["id"]
            work_off()
        assert len(receiver.requests) == 2
        (document,) = receiver.verified
        assert document["id"] == job_id and document["status"] == "succeeded"
        assert document["response"]["body"]["id"] == "answer"
        assert receiver.last.headers["x-gateway-job-id"] == job_id
        deliveries = poll(client, secret, job_id)["webhook_deliveries"]
        assert [(d["attempt"], d["status"], d["delivered"]) for d in deliveries] == [(1, 500, False), (2, 200, True)]
    finally:
        receiver.stop()


def test_a_webhook_signed_with_another_secret_is_refused_by_the_receiver(client, setup):
    receiver = Receiver()
    try:
        with override_settings(
            GATEWAY_WEBHOOK_HOSTS=[f"127.0.0.1:{receiver.port}"],
            GATEWAY_WEBHOOK_SECRET=WEBHOOK_SECRET,
            GATEWAY_WEBHOOK_MAX_ATTEMPTS=1,
        ):
            _, _, secret = setup
            _, other_secret = make_key(routes=[setup[0]])
            receiver.secret = client.get("/jobs/webhook-secret", **auth(other_secret)).json()["secret"]
            submit(client, secret, HTTP_X_CALLBACK_URL=receiver.hook)
            work_off()
        assert receiver.verified == []
        assert list(WebhookDelivery.objects.values_list("attempt", "status")) == [(1, 401)]
    finally:
        receiver.stop()


def test_metrics_export_queue_depth_per_route_and_job_latency(client, setup):
    _, _, secret = setup
    submit(client, secret)
    submit(client, secret)
    text = client.get("/metrics").content.decode()
    assert 'gateway_job_queue_depth{route="chat"} 2.0' in text
    work_off()
    text = client.get("/metrics").content.decode()
    assert 'gateway_job_queue_depth{route="chat"}' not in text
    assert 'gateway_job_latency_seconds{quantile="0.5",route="chat"}' in text


def test_prune_jobs_deletes_finished_jobs_older_than_the_retention(client, setup):
    _, _, secret = setup
    for _ in range(3):
        submit(client, secret)
    work_off()
    submit(client, secret)  # still queued: kept whatever its age
    old = timezone.now() - timedelta(days=8)
    done = list(Job.objects.filter(status=Status.SUCCEEDED).values_list("id", flat=True))
    Job.objects.filter(id__in=done[:2]).update(finished=old, created=old)
    call_command("prune_jobs", stdout=open("/dev/null", "w"))
    assert Job.objects.count() == 2
    assert not Job.objects.filter(id__in=done[:2]).exists()


def test_concurrent_submissions_with_one_idempotency_key_make_one_job(client, setup):
    _, _, secret = setup
    from django.test import Client

    ids, errors = [], []

    def one():
        try:
            response = Client().post(
                "/v1/chat/completions",
                BODY,
                content_type="application/json",
                HTTP_PREFER="respond-async",
                HTTP_IDEMPOTENCY_KEY="same",
                **auth(secret),
            )
            ids.append(json.loads(drain(response))["id"])
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            connection.close()  # this thread's own connection

    if connection.vendor == "sqlite":
        pytest.skip("an in-memory SQLite database is one connection: no concurrent writers to race")
    threads = [threading.Thread(target=one) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and len(set(ids)) == 1 and Job.objects.count() == 1


def test_a_job_counts_its_request_when_accepted_and_its_tokens_when_its_answer_arrives(client, upstream):
    upstream.reply = json_reply({"id": "answer", "usage": USAGE})  # 7 tokens
    route = make_route(name="chat")
    make_target(route, upstream.url)
    _, secret = make_key(routes=[route], requests_per_minute=2, tokens_per_day=5)
    first, _ = submit(client, secret)
    assert first.status_code == 202 and first["RateLimit"]  # what the key has left, as on any call
    assert submit(client, secret)[0].status_code == 202
    refused, body = submit(client, secret)  # the third request in the minute: refused at submission
    assert refused.status_code == 429 and "requests per minute" in json.loads(body)["error"]["message"]
    assert Job.objects.count() == 2
    work_off()  # the runs count no request; the first answer's 7 tokens use up the day's 5...
    first_job, second_job = Job.objects.order_by("created")
    assert first_job.status == Status.SUCCEEDED
    assert second_job.status == Status.FAILED and "429 rate_limit_exceeded" in second_job.error  # ...checked at run
    with override_settings(RATELIMIT_ENABLE=False):  # leave the minute's window aside: tokens only
        over, body = submit(client, secret)
    assert over.status_code == 429 and "tokens per day" in json.loads(body)["error"]["message"]


def test_the_admin_lists_jobs_and_shows_one_read_only(client, admin_client, setup):
    _, _, secret = setup
    _, body = submit(client, secret)
    job_id = json.loads(body)["id"]
    listing = admin_client.get("/admin/jobs/job/")
    assert listing.status_code == 200 and job_id in listing.content.decode()
    page = admin_client.get(f"/admin/jobs/job/{job_id}/change/")
    assert page.status_code == 200
    assert secret not in page.content.decode()
    stored = {name.lower() for name in Job.objects.get().headers}
    assert stored.isdisjoint({"authorization", "x-api-key", "cookie", "prefer"})  # the key is never stored
