"""A call cut before its usage arrived still counts its tokens.

Streamed chat and completion calls ask the upstream for their usage; when the answer is cut before
it arrives, the tokens are estimated from the bytes seen, marked as estimated in the log, and
added to the same token counters, so cut streams cannot pass a token quota.
"""

import json
import threading

import pytest
from django.db import connection

from routes_admin.models import RequestLog
from tests.factories import auth, make_key, make_plan, make_route

pytestmark = pytest.mark.django_db

WAIT = 10  # seconds: only reached when the behaviour is broken
USAGE = {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11}
FIRST = b'data: {"choices": [{"delta": {"content": "Hello there, friend"}}]}\n\n'


def held_stream(gates: list, hold: bool = True):
    """An SSE answer: one content chunk, then (once the test opens its gate) the usage chunk."""

    def reply(handler):
        gate = threading.Event()
        gates.append(gate)
        if not hold:
            gate.set()
        handler.start_chunked()
        handler.send_chunk(FIRST)
        if not gate.wait(WAIT):
            return
        try:
            handler.send_chunk(b"data: " + json.dumps({"choices": [], "usage": USAGE}).encode() + b"\n\n")
            handler.send_chunk(b"data: [DONE]\n\n")
            handler.end_chunked()
        except OSError:
            pass  # the gateway hung up: the client had gone

    return reply


@pytest.fixture
def no_close(monkeypatch):
    # request_finished must not close the test's database connection (it holds the transaction).
    monkeypatch.setattr(connection, "close_if_unusable_or_obsolete", lambda: None)


def cut_stream(client, secret, body: bytes):
    """Start a streamed call, read its first chunk and hang up. Returns the response."""
    response = client.post("/v1/chat/completions", body, content_type="application/json", **auth(secret))
    if response.status_code != 200:
        return response
    assert next(iter(response.streaming_content)) == FIRST
    response.close()  # what the WSGI server does when the client disconnects
    return response


def test_cut_streams_cannot_pass_a_token_quota(client, upstream, no_close):
    gates: list = []
    upstream.reply = held_stream(gates)
    route = make_route(upstream.url)
    _, secret = make_key(routes=[route], quota_plan=make_plan(tokens_per_day=30))
    body = json.dumps({"model": "m", "stream": True, "messages": [{"role": "user", "content": "Hi"}]}).encode()
    statuses = []
    for _ in range(6):
        statuses.append(cut_stream(client, secret, body).status_code)
        for gate in gates:
            gate.set()
    # Each cut stream counts ~len(body)/4 + 5 tokens, so the third one finds the quota used up.
    assert statuses[:2] == [200, 200]
    assert set(statuses[2:]) == {429}
    rows = RequestLog.objects.filter(status=200).order_by("id")
    assert len(rows) == 2
    for row in rows:
        assert row.error_type == "client_disconnected"
        assert row.usage_estimated is True
        assert row.prompt_tokens == -(-len(body) // 4)
        assert row.completion_tokens == -(-len(b"Hello there, friend") // 4)
        assert row.total_tokens == row.prompt_tokens + row.completion_tokens
    # The upstream was asked for its usage, and the rest of the body is the client's.
    sent = upstream.requests[0].json()
    assert sent["stream_options"] == {"include_usage": True}
    assert {k: v for k, v in sent.items() if k != "stream_options"} == json.loads(body)


def test_a_stream_that_ends_normally_counts_the_reported_usage_not_an_estimate(client, upstream):
    gates: list = []
    upstream.reply = held_stream(gates, hold=False)
    secret = make_key(routes=[make_route(upstream.url)])[1]
    body = b'{"model": "m", "stream": true, "stream_options": {"include_usage": false, "x": 1}}'
    response = client.post("/v1/chat/completions", body, content_type="application/json", **auth(secret))
    answer = b"".join(response.streaming_content)
    assert answer.startswith(FIRST) and b'"usage"' in answer  # passed on to the client unchanged
    row = RequestLog.objects.get()
    assert (row.total_tokens, row.usage_estimated, row.error_type) == (11, False, "")
    assert upstream.last.json()["stream_options"] == {"include_usage": True, "x": 1}


@pytest.mark.parametrize(
    "path, body",
    [
        ("/v1/chat/completions", b'{"model": "m", "stream": false}'),
        ("/v1/embeddings", b'{"model": "m", "stream": true}'),
        ("/v1/chat/completions", b'not json, but mentions "stream"'),
    ],
)
def test_other_calls_reach_the_upstream_unchanged(client, upstream, path, body):
    secret = make_key(routes=[make_route(upstream.url)])[1]
    b"".join(client.post(path, body, content_type="application/json", **auth(secret)).streaming_content)
    assert upstream.last.body == body


def test_a_json_answer_cut_mid_body_is_estimated(client, upstream, no_close):
    gate = threading.Event()
    answer = json.dumps({"choices": [{"message": {"content": "x" * 4000}}], "usage": USAGE}).encode()

    def reply(handler):
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(answer)))
        handler.end_headers()
        handler.wfile.write(answer[:2000])
        handler.wfile.flush()
        gate.wait(WAIT)
        try:
            handler.wfile.write(answer[2000:])
        except OSError:
            pass

    upstream.reply = reply
    secret = make_key(routes=[make_route(upstream.url)])[1]
    body = b'{"model": "m", "messages": []}'
    response = client.post("/v1/chat/completions", body, content_type="application/json", **auth(secret))
    assert next(iter(response.streaming_content)) == answer[:2000]
    response.close()
    gate.set()
    row = RequestLog.objects.get()
    assert row.error_type == "client_disconnected" and row.usage_estimated is True
    assert (row.prompt_tokens, row.completion_tokens) == (-(-len(body) // 4), 500)


def test_a_cut_answer_to_a_call_without_a_model_counts_no_tokens(client, upstream, no_close):
    gates: list = []
    upstream.reply = held_stream(gates)
    secret = make_key(routes=[make_route(upstream.url)])[1]
    response = client.get("/v1/files/x/content", **auth(secret))
    assert next(iter(response.streaming_content)) == FIRST
    response.close()
    gates[0].set()
    row = RequestLog.objects.get()
    assert (row.total_tokens, row.usage_estimated) == (None, False)
