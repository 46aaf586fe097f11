"""Which job runs next: keys take turns (the key served least recently goes first), jobs of one
key run in submission order, and a job that comes back to the queue keeps its place.
"""

import json
from datetime import timedelta

import pytest
from django.utils import timezone

from jobs import leases, queue
from jobs.models import Job, Status
from jobs.running import give_back
from tests.factories import make_key, make_route, make_target
from tests.jobs.test_jobs import submit, work_off
from tests.upstream import json_reply

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def chat(upstream):
    upstream.reply = json_reply({"id": "answer"})
    route = make_route(name="chat")
    make_target(route, upstream.url)
    return route


def job_ids(client, secret, count: int) -> list[str]:
    return [json.loads(submit(client, secret)[1])["id"] for _ in range(count)]


def test_a_keys_backlog_delays_another_keys_job_by_one_job_at_most(client, chat):
    _, a = make_key(routes=[chat], name="a")
    _, b = make_key(routes=[chat], name="b")
    backlog = job_ids(client, a, 15)
    (late,) = job_ids(client, b, 1)
    work_off(max_tasks=2)  # one worker, two turns
    assert Job.objects.get(id=late).status == Status.SUCCEEDED
    assert Job.objects.filter(id__in=backlog, status=Status.SUCCEEDED).count() == 1


def test_keys_take_turns_and_each_keys_jobs_run_in_submission_order(client, chat):
    keys = {name: make_key(routes=[chat], name=name) for name in "abc"}
    submitted = {name: job_ids(client, keys[name][1], count) for name, count in (("a", 3), ("b", 3), ("c", 1))}
    work_off()
    ran = list(Job.objects.order_by("started").values_list("api_key__name", "id"))
    assert [name for name, _ in ran] == ["a", "b", "c", "a", "b", "a", "b"]
    for name, ids in submitted.items():
        assert [str(job_id) for who, job_id in ran if who == name] == ids


def test_a_recovered_job_runs_before_the_jobs_submitted_after_it(client, chat):
    _, secret = make_key(routes=[chat])
    (first,) = job_ids(client, secret, 1)
    assert str(queue.claim_next("dead-worker").id) == first  # its worker dies with it
    newer = job_ids(client, secret, 5)
    assert leases.recover_lost(now=timezone.now() + timedelta(seconds=31)) == 1
    work_off(max_tasks=1)
    assert Job.objects.get(id=first).status == Status.SUCCEEDED
    assert not Job.objects.filter(id__in=newer, status=Status.SUCCEEDED).exists()


def test_a_job_waiting_for_its_retry_keeps_its_place_once_due(client, chat):
    _, secret = make_key(routes=[chat])
    first, *newer = job_ids(client, secret, 4)
    job = queue.claim_next("w1")
    give_back(job, "w1", delay=0, used_attempt=True)  # a failed attempt, due again at once
    work_off(max_tasks=1)
    assert Job.objects.get(id=first).status == Status.SUCCEEDED
    assert not Job.objects.filter(id__in=newer, status=Status.SUCCEEDED).exists()


def test_a_claimed_job_is_already_running_with_a_lease(client, chat):
    """No state in which a worker holds a job that is still marked queued: the claim is the change."""
    _, secret = make_key(routes=[chat])
    job_ids(client, secret, 1)
    job = queue.claim_next("w1")
    stored = Job.objects.get(id=job.id)
    assert (stored.status, stored.worker, stored.attempts) == (Status.RUNNING, "w1", 1)
    assert stored.lease_until > timezone.now()
    assert queue.claim_next("w2") is None  # nothing else to take
