"""The call pipeline runs with no web request at all (the job worker's way) and records the same row."""

import pytest
from requests.structures import CaseInsensitiveDict

from proxy import pipeline
from proxy.errors import RateLimited
from routes_admin.models import RequestLog
from tests.factories import auth, make_key, make_route, make_target
from tests.upstream import json_reply

pytestmark = pytest.mark.django_db

USAGE = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
BODY = b'{"model": "m", "messages": []}'
LOGGED = ("status", "route_id", "api_key_id", "target", "method", "path", "bytes_in", "bytes_out", "total_tokens")


def incoming(secret: str, request_id: str) -> pipeline.Incoming:
    return pipeline.Incoming(
        method="POST",
        path="/v1/chat/completions",
        headers=CaseInsensitiveDict({"authorization": f"Bearer {secret}", "content-type": "application/json"}),
        body=BODY,
        client_ip="192.0.2.7",
        request_id=request_id,
    )


def test_a_call_through_the_pipeline_alone_is_forwarded_and_logged_like_one_over_http(client, upstream):
    upstream.reply = json_reply({"id": "x", "usage": USAGE})
    route = make_route(name="chat")
    make_target(route, upstream.url, name="gpu-1")
    key, secret = make_key(routes=[route], tokens_per_day=1000)

    answer = pipeline.run(incoming(secret, "no-http"))
    try:
        body = b"".join(answer)
    finally:
        answer.close()
    assert answer.status == 200
    assert b'"usage"' in body
    assert upstream.requests[-1].headers["x-request-id"] == "no-http"

    over_http = client.post("/v1/chat/completions", BODY, content_type="application/json", **auth(secret))
    b"".join(over_http.streaming_content)

    without, with_http = (RequestLog.objects.get(request_id=rid) for rid in ("no-http", over_http["X-Request-ID"]))
    assert [getattr(without, f) for f in LOGGED] == [getattr(with_http, f) for f in LOGGED]
    assert (without.client_ip, without.total_tokens) == ("192.0.2.7", 18)


def test_a_refusal_in_the_pipeline_raises_after_the_call_is_recorded(upstream):
    route = make_route(upstream.url, name="chat")
    _, secret = make_key(routes=[route], requests_per_minute=1)
    pipeline.run(incoming(secret, "first")).close()
    with pytest.raises(RateLimited):
        pipeline.run(incoming(secret, "second"))
    row = RequestLog.objects.get(request_id="second")
    assert (row.status, row.error_type, row.limit) == (429, "rate_limit_exceeded", "requests_per_minute")


def test_a_queued_call_runs_by_key_and_route_id_and_counts_only_its_tokens(upstream):
    upstream.reply = json_reply({"id": "x", "usage": USAGE})
    route = make_route(upstream.url, name="chat")
    key, _ = make_key(routes=[route], requests_per_minute=1, tokens_per_day=1000)
    job = pipeline.Incoming(method="POST", path="/v1/chat/completions", body=BODY, request_id="job-1")
    for _ in range(2):  # its requests were counted when it was accepted: no 429 here
        answer = pipeline.run_job(job, key_id=key.id, route_id=route.id)
        b"".join(answer)
        answer.close()
    assert list(RequestLog.objects.filter(request_id="job-1").values_list("status", "total_tokens")) == [
        (200, 18),
        (200, 18),
    ]
