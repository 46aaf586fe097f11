"""Jobs as the OpenAI Python SDK uses them, against the gateway's live test server and a real
upstream: submit with `Prefer: respond-async`, poll `/jobs/<id>` with the SDK's own client, and
read the answer as the SDK's types. An in-process worker (the jobs worker's loop, batch mode)
runs the queue between submission and poll."""

import json

import httpx2
import openai
import pytest
from openai.types.chat import ChatCompletion

from jobs.management.commands.jobs_worker import JobWorker
from routes_admin.models import RequestLog
from tests.factories import make_key, make_route, make_target
from tests.upstream import json_reply, sse_reply

pytestmark = pytest.mark.django_db(transaction=True)

USAGE = {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}
COMPLETION = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1700000000,
    "model": "gpt-test",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello there"}, "finish_reason": "stop"}],
    "usage": USAGE,
}
ASYNC = {"Prefer": "respond-async"}


def chunk(delta: dict, finish=None, usage=None, choices=True) -> dict:
    return {
        "id": "chatcmpl-s",
        "object": "chat.completion.chunk",
        "created": 1700000001,
        "model": "gpt-test",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}] if choices else [],
        "usage": usage,
    }


def run_queue() -> None:
    """Run every job due now, as a worker would, then return."""
    JobWorker(
        queue_names=["webhooks"],
        interval=0,
        batch=True,
        backend_name="default",
        startup_delay=False,
        max_tasks=50,
        worker_id="sdk-worker",
        excluded_queue_names=[],
    ).run()


@pytest.fixture
def sdk(live_server, upstream):
    route = make_route(name="chat")
    make_target(route, upstream.url, name="gpu")
    _key, secret = make_key(routes=[route])
    return openai.OpenAI(base_url=f"{live_server.url}/v1", api_key=secret, max_retries=0)


def submit(sdk, content="hi", **headers) -> dict:
    raw = sdk.chat.completions.with_raw_response.create(
        model="gpt-test",
        messages=[{"role": "user", "content": content}],
        extra_headers={**ASYNC, **headers},
    )
    assert raw.status_code == 202
    job = json.loads(raw.http_response.content)
    assert raw.headers["location"] == f"/jobs/{job['id']}"
    return job


def poll(sdk, job_id: str, **params) -> dict:
    """GET /jobs/<id> through the SDK's client: its base URL's host, its API key, its headers."""
    url = sdk.base_url.copy_with(path=f"/jobs/{job_id}", params=params)
    response = sdk.get(str(url), cast_to=httpx2.Response)
    assert response.status_code == 200, response.text
    return response.json()


def test_a_job_submitted_with_the_sdk_answers_json_that_parses_as_the_sdks_type(sdk, upstream):
    """The stored answer of a JSON upstream is a JSON document in the job, not a string to decode
    again; `?raw=1` still gives the text exactly as the upstream sent it."""
    upstream.reply = json_reply(COMPLETION)
    job = submit(sdk)
    assert job["status"] == "queued"
    run_queue()

    done = poll(sdk, job["id"])
    assert done["status"] == "succeeded"
    assert done["response"]["body"] == COMPLETION
    completion = ChatCompletion.model_validate(done["response"]["body"])
    assert completion.choices[0].message.content == "Hello there"

    raw = poll(sdk, job["id"], raw="1")
    assert isinstance(raw["response"]["body"], str) and json.loads(raw["response"]["body"]) == COMPLETION


def test_a_streamed_job_answers_the_final_chat_completion_with_its_raw_events(sdk, upstream):
    """A chat completion streamed upstream is stored as the final chat.completion: the content
    concatenated, the finish reason and the usage of the last chunk; each event stays in `events`."""
    events = [
        chunk({"role": "assistant", "content": ""}),
        chunk({"content": "Hel"}),
        chunk({"content": "lo"}),
        chunk({}, finish="stop"),
        chunk({}, usage=USAGE, choices=False),
        "[DONE]",
    ]
    upstream.reply = sse_reply(events)
    raw = sdk.chat.completions.with_raw_response.create(
        model="gpt-test", messages=[{"role": "user", "content": "hi"}], stream=True, extra_headers=ASYNC
    )
    assert raw.status_code == 202
    job_id = json.loads(raw.http_response.read())["id"]  # stream=True: the SDK left the body unread
    run_queue()

    done = poll(sdk, job_id)
    answer = done["response"]
    assert answer["events"] == events
    completion = ChatCompletion.model_validate(answer["body"])
    assert completion.object == "chat.completion" and completion.id == "chatcmpl-s"
    assert completion.choices[0].message.content == "Hello"
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.total_tokens == 8


def test_reusing_an_idempotency_key_with_another_body_is_refused_with_422(sdk, upstream):
    """The same Idempotency-Key with the same request replays its job; with another request it
    is refused (422, OpenAI error shape) instead of answering with the first job."""
    upstream.reply = json_reply(COMPLETION)
    first = submit(sdk, "hi", **{"Idempotency-Key": "order-7"})
    again = sdk.chat.completions.with_raw_response.create(
        model="gpt-test",
        messages=[{"role": "user", "content": "hi"}],
        extra_headers={**ASYNC, "Idempotency-Key": "order-7"},
    )
    assert again.status_code == 202 and again.headers["idempotent-replayed"] == "true"
    assert json.loads(again.http_response.content)["id"] == first["id"]

    with pytest.raises(openai.UnprocessableEntityError) as refused:
        sdk.chat.completions.create(
            model="gpt-test",
            messages=[{"role": "user", "content": "something else"}],
            extra_headers={**ASYNC, "Idempotency-Key": "order-7"},
        )
    assert refused.value.status_code == 422
    error = refused.value.body
    assert error["type"] == "invalid_request_error" and "Idempotency-Key" in error["message"]
    from jobs.models import Job

    assert Job.objects.count() == 1


def test_a_jobs_run_is_logged_with_its_model_job_id_and_queue_wait(sdk, upstream):
    """The run's log row names the model (as the submission's does), the job and its wait; the
    submission's row names its job."""
    upstream.reply = json_reply(COMPLETION)
    job = submit(sdk)
    run_queue()
    submitted, ran = RequestLog.objects.order_by("created")
    assert submitted.status == 202 and submitted.detail["job"] == job["id"] and submitted.job_id is None
    assert ran.status == 200 and str(ran.job_id) == job["id"]
    assert ran.model == submitted.model == "gpt-test"
    assert ran.queue_ms is not None and ran.queue_ms >= 0
    assert ran.request_id == submitted.request_id
