"""Token usage read from JSON answers and from the SSE chunk that carries it."""

import gzip
import json
import zlib

import pytest

from proxy.usage import UsageTracker
from routes_admin.models import RequestLog
from tests.factories import auth, make_key, make_route
from tests.upstream import json_reply, sse_reply

USAGE = {"prompt_tokens": 12, "completion_tokens": 30, "total_tokens": 42}
COMPLETION = {"id": "c1", "object": "chat.completion", "choices": [{"message": {"content": "hi"}}], "usage": USAGE}
SSE_EVENTS = [
    {"choices": [{"delta": {"content": "Hel"}}]},
    {"choices": [{"delta": {"content": "lo"}}]},
    {"choices": [], "usage": USAGE},
    "[DONE]",
]


def sse_body(events=SSE_EVENTS) -> bytes:
    return b"".join(b"data: " + (e if isinstance(e, str) else json.dumps(e)).encode() + b"\n\n" for e in events)


def tokens(row) -> tuple:
    return row.prompt_tokens, row.completion_tokens, row.total_tokens


# --- through the gateway ------------------------------------------------------------------------


@pytest.fixture
def secret(upstream):
    return make_key(routes=[make_route(upstream.url)])[1]


def call(client, secret, stream=False) -> bytes:
    body = json.dumps({"model": "m", "stream": stream}).encode()
    response = client.post("/v1/chat/completions", body, content_type="application/json", **auth(secret))
    assert response.status_code == 200
    return b"".join(response.streaming_content)


@pytest.mark.django_db
def test_usage_from_a_json_answer(client, upstream, secret):
    upstream.reply = json_reply(COMPLETION)
    assert json.loads(call(client, secret)) == COMPLETION  # the client's bytes are untouched
    assert tokens(RequestLog.objects.get()) == (12, 30, 42)


@pytest.mark.django_db
def test_usage_from_the_sse_chunk_that_carries_it(client, upstream, secret):
    upstream.reply = sse_reply(SSE_EVENTS)
    assert call(client, secret, stream=True) == sse_body()
    row = RequestLog.objects.get()
    assert row.streamed and tokens(row) == (12, 30, 42)


@pytest.mark.django_db
def test_a_stream_without_usage_records_none(client, upstream, secret):
    upstream.reply = sse_reply([SSE_EVENTS[0], "[DONE]"])
    call(client, secret, stream=True)
    assert tokens(RequestLog.objects.get()) == (None, None, None)


@pytest.mark.django_db
def test_usage_from_a_gzip_encoded_json_answer_which_passes_still_compressed(client, upstream, secret):
    packed = gzip.compress(json.dumps(COMPLETION).encode())

    def reply(handler):
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json; charset=utf-8")
        handler.send_header("Content-Encoding", "gzip")
        handler.send_header("Content-Length", str(len(packed)))
        handler.end_headers()
        handler.wfile.write(packed)

    upstream.reply = reply
    assert call(client, secret) == packed
    assert tokens(RequestLog.objects.get()) == (12, 30, 42)


@pytest.mark.django_db
def test_usage_from_a_gzip_encoded_stream(client, upstream, secret):
    compressor = zlib.compressobj(wbits=16 + zlib.MAX_WBITS)
    pieces = [
        compressor.compress(sse_body()[i : i + 20]) + compressor.flush(zlib.Z_SYNC_FLUSH)
        for i in range(0, len(sse_body()), 20)
    ]
    pieces.append(compressor.flush())

    def reply(handler):
        handler.start_chunked(headers={"Content-Encoding": "gzip"})
        for piece in pieces:
            if piece:
                handler.send_chunk(piece)
        handler.end_chunked()

    upstream.reply = reply
    assert call(client, secret, stream=True) == b"".join(pieces)
    assert tokens(RequestLog.objects.get()) == (12, 30, 42)


@pytest.mark.django_db
def test_an_error_answer_with_usage_is_still_counted(client, upstream, secret):
    upstream.reply = json_reply({"error": {"message": "cut short"}, "usage": USAGE}, status=500)
    response = client.post("/v1/chat/completions", b"{}", content_type="application/json", **auth(secret))
    b"".join(response.streaming_content)
    assert tokens(RequestLog.objects.get()) == (12, 30, 42)


# --- UsageTracker on its own ---------------------------------------------------------------------


def feed_in_pieces(tracker: UsageTracker, data: bytes, sizes) -> dict | None:
    position = 0
    for size in sizes:
        tracker.feed(data[position : position + size])
        position += size
    tracker.feed(data[position:])
    return tracker.finish()


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 64, 10_000])
def test_sse_split_into_pieces_of_any_size(size):
    data = sse_body()
    tracker = UsageTracker("text/event-stream; charset=utf-8")
    assert feed_in_pieces(tracker, data, [size] * (len(data) // size)) == USAGE


def test_sse_split_exactly_inside_the_word_usage_and_at_the_newline():
    data = sse_body()
    cut_word = data.index(b'"usage"') + 3
    cut_newline = data.index(b"\n", cut_word)
    tracker = UsageTracker("text/event-stream")
    assert feed_in_pieces(tracker, data, [cut_word, cut_newline - cut_word, 1]) == USAGE


def test_sse_with_crlf_line_ends_and_no_space_after_data():
    data = (
        b'data:{"choices":[]}\r\n\r\ndata:{"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}\r\n\r\n'
    )
    tracker = UsageTracker("text/event-stream")
    assert feed_in_pieces(tracker, data, [9] * 12) == {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}


def test_sse_whose_last_event_has_no_trailing_newline():
    data = b'data: {"usage": {"prompt_tokens": 4, "completion_tokens": 5}}'
    tracker = UsageTracker("text/event-stream")
    tracker.feed(data)
    assert tracker.finish() == {"prompt_tokens": 4, "completion_tokens": 5, "total_tokens": 9}


def test_sse_the_last_usage_wins_and_null_usage_is_ignored():
    data = sse_body(
        [
            {"usage": None},
            {"usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}},
            {"usage": USAGE},
            {"choices": [{"delta": {"content": 'the word "usage" in content'}}]},
        ]
    )
    assert feed_in_pieces(UsageTracker("text/event-stream"), data, [11] * 40) == USAGE


def test_json_split_into_single_bytes():
    data = json.dumps(COMPLETION).encode()
    assert feed_in_pieces(UsageTracker("application/json"), data, [1] * len(data)) == USAGE


def test_gzip_json_split_at_awkward_places():
    data = gzip.compress(json.dumps(COMPLETION).encode())
    for size in (1, 3, 10):
        tracker = UsageTracker("application/json", "gzip")
        assert feed_in_pieces(tracker, data, [size] * (len(data) // size)) == USAGE


def test_deflate_json():
    data = zlib.compress(json.dumps(COMPLETION).encode())
    assert feed_in_pieces(UsageTracker("application/json", "deflate"), data, [4] * 30) == USAGE


def test_vendor_json_media_type():
    data = json.dumps(COMPLETION).encode()
    assert feed_in_pieces(UsageTracker("application/vnd.api+json"), data, []) == USAGE


def test_total_is_computed_when_missing():
    data = json.dumps({"usage": {"prompt_tokens": 8, "completion_tokens": 2}}).encode()
    assert feed_in_pieces(UsageTracker("application/json"), data, []) == {
        "prompt_tokens": 8,
        "completion_tokens": 2,
        "total_tokens": 10,
    }


def test_embeddings_usage_has_no_completion_tokens():
    data = json.dumps({"data": [], "usage": {"prompt_tokens": 5, "total_tokens": 5}}).encode()
    assert feed_in_pieces(UsageTracker("application/json"), data, [3] * 20) == {"prompt_tokens": 5, "total_tokens": 5}


@pytest.mark.parametrize(
    "content_type, encoding, data",
    [
        ("text/plain", "", b'{"usage": {"total_tokens": 5}}'),
        ("application/json", "br", b"\x1b\x00 not brotli we can read"),
        ("application/json", "gzip", b"this is not gzip at all"),
        ("application/json", "", b'{"usage": "not an object"}'),
        ("application/json", "", b'{"usage": {"prompt_tokens": "many"}}'),
        ("application/json", "", b'{"truncated": '),
        ("text/event-stream", "", b'data: {not json with "usage"}\n\n'),
    ],
)
def test_answers_without_readable_usage_give_none_and_never_raise(content_type, encoding, data):
    assert feed_in_pieces(UsageTracker(content_type, encoding), data, [2] * (len(data) // 2)) is None


def test_a_huge_json_answer_keeps_only_the_tail_and_still_finds_usage():
    from proxy import usage as usage_module

    filler = "x" * (usage_module.MAX_JSON_BYTES + 1000)
    data = json.dumps({"content": filler, "usage": USAGE}).encode()
    tracker = UsageTracker("application/json")
    for i in range(0, len(data), 1 << 20):
        tracker.feed(data[i : i + (1 << 20)])
    assert len(tracker._buffer) <= usage_module.MAX_JSON_BYTES + (1 << 20)  # bounded memory
    assert tracker.finish() == USAGE
