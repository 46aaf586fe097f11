"""Answers pass chunk by chunk as they arrive; nothing waits for the whole body."""

import json
import socket
import threading
import time

import pytest
from django.db import connection

from routes_admin.models import RequestLog
from tests.factories import auth, make_key, make_route

pytestmark = pytest.mark.django_db

WAIT = 10  # seconds: only reached when the behaviour is broken


def gated_stream(gate: threading.Event, first: bytes, last: bytes, content_type="text/event-stream"):
    """An upstream that sends `first`, then waits for the test to open `gate`, then sends `last`."""

    def reply(handler):
        handler.start_chunked(content_type=content_type)
        handler.send_chunk(first)
        gate.wait(WAIT)
        handler.send_chunk(last)
        handler.end_chunked()

    return reply


@pytest.fixture
def secret(upstream):
    return make_key(routes=[make_route(upstream.url)])[1]


@pytest.mark.parametrize("content_type", ["text/event-stream", "application/x-ndjson", "application/octet-stream"])
def test_first_chunk_reaches_the_client_before_the_upstream_sends_the_last(client, upstream, secret, content_type):
    gate = threading.Event()
    upstream.reply = gated_stream(gate, b"data: first\n\n", b"data: last\n\n", content_type)
    response = client.post("/v1/chat/completions", b'{"stream": true}', content_type="application/json", **auth(secret))
    assert response.status_code == 200
    assert response["Content-Type"] == content_type
    chunks = iter(response.streaming_content)
    assert next(chunks) == b"data: first\n\n"
    assert not gate.is_set()  # the upstream is still holding its last chunk
    gate.set()
    assert b"".join(chunks) == b"data: last\n\n"


def test_sse_events_pass_one_by_one_unchanged(client, upstream, secret):
    events = [
        b'data: {"choices":[{"delta":{"content":"Hel"}}]}\n\n',
        b": a comment line keeps the connection alive\n\n",
        b'event: custom\ndata: {"x": 1}\nid: 7\n\n',
        b"data: [DONE]\n\n",
    ]
    gates = [threading.Event() for _ in events]

    def reply(handler):
        handler.start_chunked(headers={"Cache-Control": "no-cache"})
        for event, gate in zip(events, gates, strict=True):
            handler.send_chunk(event)
            gate.wait(WAIT)
        handler.end_chunked()

    upstream.reply = reply
    response = client.post("/v1/chat/completions", b"{}", content_type="application/json", **auth(secret))
    assert response["Cache-Control"] == "no-cache"
    chunks = iter(response.streaming_content)
    for event, gate in zip(events, gates, strict=True):
        assert next(chunks) == event  # each arrives while the upstream waits before the next
        gate.set()
    assert list(chunks) == []
    row = RequestLog.objects.get()
    assert row.streamed and row.status == 200 and row.error_type == ""
    assert row.bytes_out == sum(len(e) for e in events)


def test_a_large_answer_is_passed_in_pieces_not_buffered(client, upstream, secret):
    piece = b"x" * 65536
    gate = threading.Event()

    def reply(handler):
        handler.start_chunked(content_type="application/octet-stream")
        for _ in range(4):
            handler.send_chunk(piece)
        gate.wait(WAIT)
        for _ in range(4):
            handler.send_chunk(piece)
        handler.end_chunked()

    upstream.reply = reply
    response = client.get("/v1/files/big", **auth(secret))
    received = 0
    chunks = iter(response.streaming_content)
    while received < 4 * len(piece):
        received += len(next(chunks))
    assert not gate.is_set()
    gate.set()
    received += sum(len(chunk) for chunk in chunks)
    assert received == 8 * len(piece)


def test_a_client_that_goes_away_mid_stream_still_gets_its_log_row(client, upstream, secret, monkeypatch):
    gate = threading.Event()
    upstream.reply = gated_stream(gate, b"data: first\n\n", b"data: never read\n\n")
    response = client.post("/v1/chat/completions", b"{}", content_type="application/json", **auth(secret))
    chunks = iter(response.streaming_content)
    assert next(chunks) == b"data: first\n\n"
    assert RequestLog.objects.count() == 0  # not before the call has ended
    # What the WSGI server does when the client disconnects. (request_finished must not close the
    # test's database connection, which holds the test's transaction.)
    monkeypatch.setattr(connection, "close_if_unusable_or_obsolete", lambda: None)
    response.close()
    gate.set()
    row = RequestLog.objects.get()
    assert row.status == 200
    assert row.error_type == "client_disconnected"
    assert row.bytes_out == len(b"data: first\n\n")


def test_streaming_through_a_real_server_and_a_client_that_hangs_up(cluster, upstream):
    """gunicorn + gevent, as in production: no buffering anywhere, and a disconnect is recorded."""
    gate = threading.Event()
    stopped_sending = threading.Event()

    def reply(handler):
        handler.start_chunked()
        handler.send_chunk(b'data: {"n": 0}\n\n')
        gate.wait(WAIT)
        try:
            for n in range(1, 2000):  # ~50 s: until the gateway hangs up on us
                handler.send_chunk(f'data: {{"n": {n}}}\n\n'.encode())
                time.sleep(0.025)
            handler.end_chunked()
        except OSError:
            pass
        finally:
            stopped_sending.set()

    upstream.reply = reply
    secret = cluster.shell(
        "from routes_admin.models import APIKey, Route, UpstreamTarget\n"
        "route = Route.objects.create(name='r', path_prefix='/v1')\n"
        f"UpstreamTarget.objects.create(route=route, url='{upstream.url}')\n"
        "key, secret = APIKey.objects.issue(name='k', all_routes=True)\n"
        "print(secret)"
    ).strip()
    gateway = cluster.start()

    # A raw socket, so that hanging up is a real TCP close in the middle of the answer.
    host, port = gateway.url.removeprefix("http://").split(":")
    body = b'{"stream": true}'
    sock = socket.create_connection((host, int(port)), timeout=WAIT)
    sock.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        + f"Authorization: Bearer {secret}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    received = b""
    while b'data: {"n": 0}' not in received:
        data = sock.recv(65536)
        assert data, "the gateway closed the connection"
        received += data
    assert received.startswith(b"HTTP/1.1 200")
    assert b"text/event-stream" in received
    assert not gate.is_set()  # the first event arrived while the upstream still holds the rest
    gate.set()
    while b'data: {"n": 3}' not in received:
        received += sock.recv(65536)
    sock.close()  # the client goes away mid-stream

    assert stopped_sending.wait(WAIT), "the gateway kept reading from the upstream after the client left"
    deadline = time.monotonic() + WAIT
    row = {}
    while time.monotonic() < deadline:
        out = cluster.shell(
            "import json\nfrom routes_admin.models import RequestLog\n"
            "print(json.dumps(list(RequestLog.objects.values('status', 'error_type', 'streamed', 'bytes_out'))))"
        )
        rows = json.loads(out)
        if rows:
            assert len(rows) == 1
            row = rows[0]
            break
        time.sleep(0.3)
    assert row, "no log row for the call whose client went away"
    assert row["status"] == 200 and row["streamed"] is True
    assert row["error_type"] == "client_disconnected"
    assert 0 < row["bytes_out"] < 1000 * 16  # far from the whole answer
