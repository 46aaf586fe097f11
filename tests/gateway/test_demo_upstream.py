"""The demo OpenAI-compatible component, alone and behind the gateway."""

import json
import math
import subprocess
import sys
import threading
from socketserver import ThreadingMixIn
from urllib.parse import urlsplit
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest
import requests

from demo_upstream.app import application
from routes_admin.models import RequestLog
from tests.factories import auth, make_key, make_route
from tests.servers import ROOT, reported_url, wait_until_up


class QuietHandler(WSGIRequestHandler):
    def log_message(self, *args):
        pass


class ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


@pytest.fixture(scope="module")
def demo():
    """The demo component's WSGI app on 127.0.0.1, in a thread."""
    server = make_server("127.0.0.1", 0, application, server_class=ThreadingWSGIServer, handler_class=QuietHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


FAST = {"X-Demo-Interval": "0"}
CHAT = {"model": "demo-chat", "messages": [{"role": "user", "content": "tell me a short story"}]}


def sse_events(response) -> list:
    events = []
    for line in response.iter_lines():
        if line.startswith(b"data: "):
            payload = line[6:]
            events.append(payload.decode() if payload == b"[DONE]" else json.loads(payload))
    return events


def test_models_list(demo):
    response = requests.get(f"{demo}/v1/models", timeout=5)
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "list"
    assert {m["id"] for m in body["data"]} == {"demo-chat", "demo-embed"}
    assert all(m["object"] == "model" for m in body["data"])


def test_chat_completion_with_usage(demo):
    response = requests.post(f"{demo}/v1/chat/completions", json=CHAT, timeout=5)
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "chat.completion" and body["model"] == "demo-chat"
    message = body["choices"][0]["message"]
    assert message["role"] == "assistant" and "tell me a short story" in message["content"]
    assert body["choices"][0]["finish_reason"] == "stop"
    usage = body["usage"]
    assert usage["prompt_tokens"] == 5
    assert usage["completion_tokens"] == len(message["content"].split(" "))
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_streaming_chat_completion_with_usage_and_done(demo):
    plain = requests.post(f"{demo}/v1/chat/completions", json=CHAT, timeout=5).json()
    with requests.post(
        f"{demo}/v1/chat/completions", json={**CHAT, "stream": True}, headers=FAST, stream=True, timeout=5
    ) as response:
        assert response.headers["Content-Type"] == "text/event-stream"
        events = sse_events(response)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == chunks[0]["id"] for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text.strip() == plain["choices"][0]["message"]["content"]
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == plain["usage"]


def test_streaming_without_usage_when_the_client_says_so(demo):
    body = {**CHAT, "stream": True, "stream_options": {"include_usage": False}}
    with requests.post(f"{demo}/v1/chat/completions", json=body, headers=FAST, stream=True, timeout=5) as response:
        events = sse_events(response)
    assert not any(isinstance(e, dict) and "usage" in e for e in events)


def test_x_demo_chunks_sets_the_number_of_streamed_pieces(demo):
    headers = {"X-Demo-Interval": "0.01", "X-Demo-Chunks": "10"}
    with requests.post(
        f"{demo}/v1/chat/completions", json={**CHAT, "stream": True}, headers=headers, stream=True, timeout=5
    ) as response:
        lines = response.iter_lines()
        first = next(line for line in lines if line)
        assert b'"role": "assistant"' in first
        rest = [line for line in lines if line]
    assert len(rest) == 10 + 3  # ten words, the stop chunk, usage, [DONE]


def test_embeddings_with_usage(demo):
    body = {"model": "demo-embed", "input": ["hello world", "hello world", "other text"], "dimensions": 16}
    response = requests.post(f"{demo}/v1/embeddings", json=body, timeout=5)
    assert response.status_code == 200
    result = response.json()
    vectors = [item["embedding"] for item in result["data"]]
    assert [item["index"] for item in result["data"]] == [0, 1, 2]
    assert all(len(v) == 16 and math.isclose(sum(x * x for x in v), 1.0, rel_tol=1e-9) for v in vectors)
    assert vectors[0] == vectors[1] != vectors[2]  # the same text, the same vector
    assert result["usage"] == {"prompt_tokens": 6, "total_tokens": 6}


def test_a_single_string_input_is_embedded(demo):
    result = requests.post(f"{demo}/v1/embeddings", json={"input": "one"}, timeout=5).json()
    assert len(result["data"]) == 1 and len(result["data"][0]["embedding"]) == 8


@pytest.mark.parametrize(
    "method, path, body, status",
    [
        ("POST", "/v1/chat/completions", b"not json", 400),
        ("POST", "/v1/embeddings", b"{}", 400),
        ("GET", "/v1/nothing", b"", 404),
        ("GET", "/v1/chat/completions", b"", 404),
    ],
)
def test_bad_calls_get_openai_style_errors(demo, method, path, body, status):
    response = requests.request(method, f"{demo}{path}", data=body, timeout=5)
    assert response.status_code == status
    assert response.json()["error"]["message"]


@pytest.mark.django_db
def test_behind_the_gateway_usage_is_recorded_for_both_kinds_of_answer(client, demo):
    route = make_route(f"{demo}/v1")
    _, secret = make_key(routes=[route])
    for stream in (False, True):
        response = client.post(
            "/v1/chat/completions",
            json.dumps({**CHAT, "stream": stream}),
            content_type="application/json",
            HTTP_X_DEMO_INTERVAL="0",
            **auth(secret),
        )
        assert response.status_code == 200
        b"".join(response.streaming_content)
    rows = list(RequestLog.objects.order_by("id"))
    assert [r.streamed for r in rows] == [False, True]
    assert rows[0].total_tokens == rows[1].total_tokens > 0


@pytest.mark.slow  # a process of its own
def test_python_m_demo_upstream_serves_on_the_port_it_reports():
    """What `make run` starts; on port 0 the system picks a free port, and the line it prints names it."""
    process = subprocess.Popen(
        [sys.executable, "-m", "demo_upstream", "--port", "0"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        url = reported_url(process, "demo upstream listening on")
        host, port = urlsplit(url).hostname, urlsplit(url).port
        assert host == "127.0.0.1" and port > 0
        wait_until_up(f"{url}/health", process=process)
        assert requests.get(f"{url}/v1/models", timeout=5).json()["object"] == "list"
    finally:
        process.terminate()
        process.wait(timeout=10)
