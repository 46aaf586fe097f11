"""The demo component as a plain WSGI application (standard library only).

Endpoints: GET /v1/models, POST /v1/chat/completions (streaming or not), POST /v1/embeddings,
GET /health. Headers that shape the answer, for tests and benchmarks:
  X-Demo-Delay: seconds to wait before answering
  X-Demo-Chunks: number of streamed content chunks (default: one per word)
  X-Demo-Interval: seconds between streamed chunks (default DEMO_CHUNK_INTERVAL or 0.05)
"""

import hashlib
import json
import math
import os
import time
import uuid

MODELS = ("demo-chat", "demo-embed")
DEFAULT_INTERVAL = float(os.environ.get("DEMO_CHUNK_INTERVAL", "0.05"))


def _json(start_response, status: str, payload, extra_headers=()):
    body = json.dumps(payload).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body))), *extra_headers])
    return [body]


def _error(start_response, status: str, message: str):
    return _json(start_response, status, {"error": {"type": "invalid_request_error", "message": message}})


def _read_json(environ):
    length = int(environ.get("CONTENT_LENGTH") or 0)
    raw = environ["wsgi.input"].read(length) if length else b""
    try:
        return json.loads(raw) if raw else {}
    except ValueError:
        return None


def _words(messages) -> list[str]:
    words = []
    for message in messages if isinstance(messages, list) else []:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            words.extend(content.split())
    return words


def _reply_words(prompt_words: list[str]) -> list[str]:
    said = " ".join(prompt_words[-12:]) or "nothing"
    return f"Hello from the demo component! You said: {said}".split(" ")


def _header_float(environ, name: str, default: float) -> float:
    try:
        return max(0.0, float(environ.get(name, default)))
    except ValueError:
        return default


def models(environ, start_response):
    return _json(
        start_response,
        "200 OK",
        {"object": "list", "data": [{"id": m, "object": "model", "created": 0, "owned_by": "demo"} for m in MODELS]},
    )


def chat_completions(environ, start_response):
    request = _read_json(environ)
    if not isinstance(request, dict):
        return _error(start_response, "400 Bad Request", "The body must be a JSON object.")
    model = request.get("model") or "demo-chat"
    prompt = _words(request.get("messages"))
    reply = _reply_words(prompt)
    usage = {
        "prompt_tokens": len(prompt),
        "completion_tokens": len(reply),
        "total_tokens": len(prompt) + len(reply),
    }
    completion_id = "chatcmpl-" + uuid.uuid4().hex[:24]
    created = int(time.time())
    time.sleep(_header_float(environ, "HTTP_X_DEMO_DELAY", 0))
    if not request.get("stream"):
        return _json(
            start_response,
            "200 OK",
            {
                "id": completion_id,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": " ".join(reply)}, "finish_reason": "stop"}
                ],
                "usage": usage,
            },
        )
    include_usage = (request.get("stream_options") or {}).get("include_usage", True)
    chunks = int(_header_float(environ, "HTTP_X_DEMO_CHUNKS", len(reply))) or 1
    interval = _header_float(environ, "HTTP_X_DEMO_INTERVAL", DEFAULT_INTERVAL)
    start_response("200 OK", [("Content-Type", "text/event-stream"), ("Cache-Control", "no-cache")])

    def event(choices, extra=None):
        data = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": choices,
            **(extra or {}),
        }
        return b"data: " + json.dumps(data).encode() + b"\n\n"

    def stream():
        yield event([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
        for i in range(chunks):
            time.sleep(interval)
            word = reply[i % len(reply)]
            yield event([{"index": 0, "delta": {"content": word + " "}, "finish_reason": None}])
        yield event([{"index": 0, "delta": {}, "finish_reason": "stop"}])
        if include_usage:
            yield event([], {"usage": usage})
        yield b"data: [DONE]\n\n"

    return stream()


def embeddings(environ, start_response):
    request = _read_json(environ)
    if not isinstance(request, dict) or "input" not in request:
        return _error(start_response, "400 Bad Request", "The body must be a JSON object with an input.")
    inputs = request["input"] if isinstance(request["input"], list) else [request["input"]]
    dimensions = int(request.get("dimensions") or 8)
    data, tokens = [], 0
    for index, text in enumerate(inputs):
        text = str(text)
        tokens += len(text.split())
        digest = hashlib.sha256(text.encode()).digest()
        vector = [(digest[i % len(digest)] - 127.5) / 127.5 for i in range(dimensions)]
        norm = math.sqrt(sum(v * v for v in vector)) or 1.0
        data.append({"object": "embedding", "index": index, "embedding": [v / norm for v in vector]})
    return _json(
        start_response,
        "200 OK",
        {
            "object": "list",
            "data": data,
            "model": request.get("model") or "demo-embed",
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        },
    )


def health(environ, start_response):
    return _json(start_response, "200 OK", {"status": "ok"})


ROUTES = {
    ("GET", "/v1/models"): models,
    ("POST", "/v1/chat/completions"): chat_completions,
    ("POST", "/v1/embeddings"): embeddings,
    ("GET", "/health"): health,
}


def application(environ, start_response):
    handler = ROUTES.get((environ["REQUEST_METHOD"], environ.get("PATH_INFO", "")))
    if handler is None:
        return _error(start_response, "404 Not Found", f"No such endpoint: {environ.get('PATH_INFO', '')}")
    return handler(environ, start_response)
