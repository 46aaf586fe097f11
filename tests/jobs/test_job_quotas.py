"""Jobs pay what calls pay: a job's token quotas are checked when it runs, and a key may have only
so many jobs waiting or running (max_queued_jobs on its plan, GATEWAY_JOB_MAX_QUEUED by default).
"""

import json

import pytest
from django.test import override_settings

from jobs.models import Job, Status
from routes_admin.models import QuotaPlan
from tests.factories import make_key, make_route, make_target
from tests.jobs.test_jobs import poll, submit, work_off
from tests.upstream import json_reply

pytestmark = pytest.mark.django_db(transaction=True)

USAGE = {"prompt_tokens": 4, "completion_tokens": 5, "total_tokens": 9}


@pytest.fixture
def chat(upstream):
    upstream.reply = json_reply({"id": "answer", "usage": USAGE})
    route = make_route(name="chat")
    make_target(route, upstream.url)
    return route


def test_jobs_stop_running_once_the_keys_tokens_are_used_and_fail_with_the_calls_429(client, upstream, chat):
    _, secret = make_key(routes=[chat], tokens_per_day=20)
    ids = []
    for _ in range(5):  # all accepted: nothing is spent yet
        response, body = submit(client, secret)
        assert response.status_code == 202
        ids.append(json.loads(body)["id"])
    work_off()
    done = [poll(client, secret, job_id) for job_id in ids]
    # 0, 9, 18 tokens used before each of the first three: under 20, they run; then 27 >= 20.
    assert [d["status"] for d in done] == ["succeeded"] * 3 + ["failed"] * 2
    assert len(upstream.requests) == 3
    for refused in done[3:]:
        assert refused["error"].startswith("429 rate_limit_exceeded: This API key has used its limit of 20 tokens")
        assert refused["attempts"] == 1

    # A call now gets the same error type.
    response = client.post(
        "/v1/chat/completions",
        b'{"model": "m"}',
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {secret}",
    )
    assert response.status_code == 429 and response.json()["error"]["type"] == "rate_limit_exceeded"


def test_a_key_over_its_plans_max_queued_jobs_gets_a_json_429_and_nothing_is_queued(client, chat):
    plan = QuotaPlan.objects.create(name="batch", max_queued_jobs=2)
    _, secret = make_key(routes=[chat], quota_plan=plan)
    other_key, other = make_key(routes=[chat], quota_plan=plan)
    assert [submit(client, secret)[0].status_code for _ in range(2)] == [202, 202]
    response, body = submit(client, secret)
    assert response.status_code == 429
    error = json.loads(body)["error"]
    assert error["type"] == "rate_limit_exceeded" and "2 jobs waiting or running" in error["message"]
    assert error["request_id"]
    assert Job.objects.count() == 2
    assert submit(client, other)[0].status_code == 202  # per key: another key is not affected

    # An Idempotency-Key replay is no new job: it is answered even at the cap.
    Job.objects.filter(api_key__quota_plan=plan).exclude(api_key=other_key).update(status=Status.SUCCEEDED)
    first, _ = submit(client, secret, HTTP_IDEMPOTENCY_KEY="same")
    Job.objects.filter(status=Status.SUCCEEDED).delete()
    submit(client, secret)
    again, _ = submit(client, secret, HTTP_IDEMPOTENCY_KEY="same")
    assert (first.status_code, again.status_code) == (202, 202) and again["Idempotent-Replayed"] == "true"


@override_settings(GATEWAY_JOB_MAX_QUEUED=1)
def test_without_a_plan_value_the_setting_caps_queued_jobs(client, chat):
    _, secret = make_key(routes=[chat])
    assert submit(client, secret)[0].status_code == 202
    assert submit(client, secret)[0].status_code == 429
    Job.objects.update(status=Status.SUCCEEDED)  # finished jobs do not count
    assert submit(client, secret)[0].status_code == 202


def test_a_keys_own_override_wins_over_its_plan(client, chat):
    plan = QuotaPlan.objects.create(name="batch", max_queued_jobs=1)
    _, secret = make_key(routes=[chat], quota_plan=plan, max_queued_jobs=3)
    assert [submit(client, secret)[0].status_code for _ in range(4)] == [202, 202, 202, 429]
