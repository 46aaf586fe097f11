"""What an upstream answers cannot exhaust the worker.

A gzip bomb, an SSE line that never ends and an answer cut mid-body pass through (the client's
bytes are the upstream's), the usage reader's memory stays bounded, and the call is logged.
Memory is measured with tracemalloc (peak of Python allocations during the call), never time.
"""

import json
import tracemalloc
import zlib

import pytest

from proxy import usage as usage_module
from proxy.usage import UsageTracker
from routes_admin.models import RequestLog
from tests.factories import auth, make_key, make_route

pytestmark = pytest.mark.django_db

USAGE = {"prompt_tokens": 5, "completion_tokens": 6, "total_tokens": 11}
USAGE_EVENT = b"data: " + json.dumps({"choices": [], "usage": USAGE}).encode() + b"\n\n"
BOUND = 16 * 1024 * 1024  # far above what the reader keeps, far below what the old one grew to


def gzipped(*parts: tuple[bytes, int]) -> bytes:
    """gzip of each (block, times) in turn, compressed as it goes (never whole in memory)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    out = [packer.compress(block) for block, times in parts for _ in range(times)]
    return b"".join(out) + packer.flush()


def serve(upstream, payload: bytes, content_type: str, encoding: str = "gzip"):
    def reply(handler):
        handler.send_response(200)
        handler.send_header("Content-Type", content_type)
        if encoding:
            handler.send_header("Content-Encoding", encoding)
        handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        for i in range(0, len(payload), 65536):
            handler.wfile.write(payload[i : i + 65536])

    upstream.reply = reply


def call_measured(client, secret) -> tuple[bytes, int]:
    """One call through the gateway; the answer's bytes and the peak of Python memory meanwhile."""
    tracemalloc.start()
    try:
        response = client.post(
            "/v1/chat/completions", b'{"model": "m"}', content_type="application/json", **auth(secret)
        )
        received = []
        for chunk in response.streaming_content:
            received.append(len(chunk))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return sum(received), peak


@pytest.fixture
def secret(upstream):
    return make_key(routes=[make_route(upstream.url)])[1]


def test_a_gzip_bombed_json_answer_passes_with_bounded_memory(client, upstream, secret):
    bomb = gzipped((b" " * (1 << 20), 48), (json.dumps({"usage": USAGE}).encode(), 1))  # 48 MB from ~50 KB
    serve(upstream, bomb, "application/json")
    size, peak = call_measured(client, secret)
    assert size == len(bomb)  # the client gets the upstream's bytes, still compressed
    assert peak < BOUND, f"peak {peak / 1e6:.0f} MB"
    row = RequestLog.objects.get()
    assert row.status == 200 and row.error_type == ""
    assert row.total_tokens == 11  # within MAX_DECODED_BYTES: still read, from the tail


def test_a_gzip_bombed_stream_of_newlines_passes_with_bounded_memory(client, upstream, secret):
    bomb = gzipped((b"\n" * (1 << 20), 2), (USAGE_EVENT, 1))  # 2 million empty lines
    serve(upstream, bomb, "text/event-stream")
    size, peak = call_measured(client, secret)
    assert size == len(bomb)
    assert peak < BOUND, f"peak {peak / 1e6:.0f} MB"
    assert RequestLog.objects.get().total_tokens == 11


def test_decompression_stops_at_its_cap(monkeypatch):
    monkeypatch.setattr(usage_module, "MAX_DECODED_BYTES", 1 << 20)
    tracker = UsageTracker("application/json", "gzip")
    bomb = gzipped((b" " * (1 << 20), 8), (json.dumps({"usage": USAGE}).encode(), 1))
    for i in range(0, len(bomb), 4096):
        tracker.feed(bomb[i : i + 4096])
    assert not tracker.active
    assert tracker.decoded <= (1 << 20) + usage_module.DECODE_STEP
    assert len(tracker._buffer) == 0
    assert tracker.finish() is None  # too big to look at: no usage rather than a frozen worker


def test_an_sse_line_that_never_ends_is_skipped_and_the_usage_after_it_still_counts(client, upstream, secret):
    def reply(handler):
        handler.start_chunked()
        handler.send_chunk(b'data: {"choices": [{"delta": {"content": "')
        for _ in range(128):  # 8 MB without a newline
            handler.send_chunk(b"x" * 65536)
        handler.send_chunk(b'"}}]}\n\n' + USAGE_EVENT + b"data: [DONE]\n\n")
        handler.end_chunked()

    upstream.reply = reply
    size, peak = call_measured(client, secret)
    assert size > 8 * 1024 * 1024
    assert peak < BOUND, f"peak {peak / 1e6:.0f} MB"
    row = RequestLog.objects.get()
    assert (row.total_tokens, row.usage_estimated) == (11, False)


def test_the_reader_keeps_at_most_one_line_of_an_endless_stream():
    tracker = UsageTracker("text/event-stream")
    largest = 0
    for _ in range(64):
        tracker.feed(b"y" * 65536)
        largest = max(largest, len(tracker._buffer))
    assert largest <= usage_module.MAX_LINE_BYTES
    tracker.feed(b"\n" + USAGE_EVENT)
    assert tracker.finish() == USAGE


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_an_answer_cut_mid_body_is_logged_with_its_error_and_the_gateway_goes_on(client, upstream, secret, framing):
    def reply(handler):
        if framing == "chunked":
            handler.start_chunked()
            handler.send_chunk(b'data: {"choices": [{"delta": {"content": "Hello"}}]}\n\n')
        else:
            handler.send_response(200)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", "1000")
            handler.end_headers()
            handler.wfile.write(b'{"choices": [{"message": {"content": "Hel')
        handler.wfile.flush()
        handler.close_connection = True  # and the connection ends mid-answer

    upstream.reply = reply
    response = client.post(
        "/v1/chat/completions", b'{"model": "m", "stream": true}', content_type="application/json", **auth(secret)
    )
    assert response.status_code == 200  # the status was sent before the cut
    answer = b"".join(response.streaming_content)
    if framing == "chunked":
        assert b"event: error" in answer  # the SSE client learns the stream broke
    row = RequestLog.objects.get()
    assert row.error_type == "upstream_stream_error"
    assert row.usage_estimated is True and row.total_tokens > 0  # the cut call still counts
    upstream.reply = lambda handler: handler.send_json(200, {"usage": USAGE})
    response = client.post("/v1/chat/completions", b'{"model": "m"}', content_type="application/json", **auth(secret))
    assert b"".join(response.streaming_content) and response.status_code == 200
