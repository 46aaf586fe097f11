"""Claimed work comes back after a crash at any point: a webhook delivery whose worker died goes
back to the queue in its place, and a job's end and its webhook commit together or not at all.
"""

import json
from datetime import timedelta

import pytest
from django.db import OperationalError, connection
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from jobs import leases
from jobs.models import Job, Status, WorkerBeat
from tests.factories import make_key, make_route, make_target
from tests.jobs.test_jobs import submit, work_off
from tests.upstream import UpstreamServer, json_reply

pytestmark = pytest.mark.django_db(transaction=True)
LATER = timedelta(seconds=31)  # past GATEWAY_JOB_LEASE_SECONDS (30)


@pytest.fixture
def receiver():
    server = UpstreamServer()
    server.reply = json_reply({})
    yield server
    server.stop()


@pytest.fixture
def with_webhook(upstream, receiver, settings):
    settings.GATEWAY_WEBHOOK_HOSTS = [f"127.0.0.1:{receiver.port}"]  # a bare host allows port 80 only
    settings.GATEWAY_WEBHOOK_SECRET = "recovery-secret"
    upstream.reply = json_reply({"id": "answer"})
    route = make_route(name="chat")
    make_target(route, upstream.url)
    _, secret = make_key(routes=[route])
    return secret


def claim_delivery(worker: str) -> DBTaskResult:
    """The engine's claim of the next delivery, by a worker that then dies."""
    task = DBTaskResult.objects.filter(queue_name="webhooks", status="READY").get()
    task.claim(worker)
    return task


def test_a_delivery_whose_worker_died_is_delivered_by_another_worker(client, with_webhook, receiver):
    _, body = submit(client, with_webhook, HTTP_X_CALLBACK_URL=f"{receiver.url}/hook")
    job_id = json.loads(body)["id"]
    work_off(max_tasks=1)  # the job runs; its delivery is queued
    task = claim_delivery("dead-worker")
    enqueued = task.enqueued_at

    assert leases.recover_deliveries() == 0  # claimed just now: within the lease
    assert leases.recover_deliveries(now=timezone.now() + LATER) == 1
    back = DBTaskResult.objects.get(id=task.id)
    assert back.status == "READY" and back.enqueued_at == enqueued  # in its place
    work_off()
    assert [r.headers["x-gateway-job-id"] for r in receiver.requests] == [job_id]
    assert Job.objects.get().deliveries.get().delivered


def test_a_delivery_held_by_a_live_worker_is_left_alone(client, with_webhook, receiver):
    submit(client, with_webhook, HTTP_X_CALLBACK_URL=f"{receiver.url}/hook")
    work_off(max_tasks=1)
    claim_delivery("slow-worker")
    later = timezone.now() + LATER
    WorkerBeat.objects.create(worker="slow-worker", seen=later)  # it still beats
    assert leases.recover_deliveries(now=later) == 0
    assert DBTaskResult.objects.get(queue_name="webhooks").status == "RUNNING"


def test_a_delivery_a_live_worker_lost_comes_back_once_no_delivery_can_take_that_long(
    client, with_webhook, receiver, settings
):
    """A live worker whose database went away between claiming a delivery and its end could not
    mark it: it stayed RUNNING for ever, as its worker kept beating. Past the lease plus the
    webhook timeout no delivery is still running, so it goes back to the queue."""
    submit(client, with_webhook, HTTP_X_CALLBACK_URL=f"{receiver.url}/hook")
    work_off(max_tasks=1)
    claim_delivery("live-worker")
    much_later = timezone.now() + LATER + timedelta(seconds=settings.GATEWAY_WEBHOOK_TIMEOUT)
    WorkerBeat.objects.create(worker="live-worker", seen=much_later)  # it still beats
    assert leases.recover_deliveries(now=much_later) == 1
    work_off()
    assert len(receiver.requests) == 1 and Job.objects.get().deliveries.get().delivered


def test_an_attempt_already_recorded_is_not_posted_again(client, with_webhook, receiver):
    """A worker that recorded its attempt and died before marking its task done: the rerun is a no-op."""
    submit(client, with_webhook, HTTP_X_CALLBACK_URL=f"{receiver.url}/hook")
    work_off()
    assert len(receiver.requests) == 1
    DBTaskResult.objects.filter(queue_name="webhooks").update(status="READY")  # as if never marked done
    work_off()
    assert len(receiver.requests) == 1 and Job.objects.get().deliveries.count() == 1


def test_a_job_is_not_marked_done_when_its_webhook_cannot_be_scheduled(client, with_webhook, receiver):
    submit(client, with_webhook, HTTP_X_CALLBACK_URL=f"{receiver.url}/hook")

    def queue_unwritable(execute, sql, params, many, context):
        if sql.startswith('INSERT INTO "django_tasks_database_dbtaskresult"'):
            raise OperationalError("the queue cannot be written")
        return execute(sql, params, many, context)

    with connection.execute_wrapper(queue_unwritable):
        work_off(max_tasks=1)
    job = Job.objects.get()
    # Neither happened: the job still runs under its lease, so it is recovered and done again
    # with its webhook, instead of "succeeded" with a webhook that never comes.
    assert job.status == Status.RUNNING and not DBTaskResult.objects.filter(queue_name="webhooks").exists()
    assert leases.recover_lost(now=timezone.now() + LATER) == 1
    work_off()
    job.refresh_from_db()
    assert job.status == Status.SUCCEEDED and job.deliveries.get().delivered
