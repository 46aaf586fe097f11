"""A job's stored answer as a client reads it: JSON as JSON, a stream as its final document.

The worker stores the upstream's bytes whole (running.py); this module only reads them, so a
job stored before it existed reads the same way, and `GET /jobs/<id>?raw=1` still gives the
bytes as text.

- JSON (`application/json`, `...+json`) that parses: `body` is the document itself, not a string
  to decode a second time.
- A server-sent event stream: `events` holds each event's data (JSON decoded where it is JSON,
  "[DONE]" as sent) and `body` the document the stream builds up, when the gateway knows the
  stream: chat completion chunks become the final `chat.completion` (content, tool calls,
  finish_reason and usage), text completion chunks the final `text_completion`, and a Responses
  API stream the response of its `response.completed` event. Another stream keeps its text in `body`.
"""

import json


def content_type(headers) -> str:
    for pair in headers or []:
        if len(pair) == 2 and str(pair[0]).lower() == "content-type":
            return str(pair[1]).split(";")[0].strip().lower()
    return ""


def is_json_type(kind: str) -> bool:
    return kind == "application/json" or kind.endswith("+json")


def sse_events(text: str) -> list:
    """Each event's data (its `data:` lines joined), JSON decoded when it parses."""
    events = []
    for block in text.replace("\r\n", "\n").replace("\r", "\n").split("\n\n"):
        lines = [line[5:].removeprefix(" ") for line in block.split("\n") if line.startswith("data:")]
        if not lines:
            continue
        data = "\n".join(lines)
        try:
            events.append(json.loads(data))
        except ValueError:
            events.append(data)
    return events


def _merge_tool_calls(calls: list, deltas: list) -> None:
    """Tool call deltas arrive in pieces by index: the id, type and name once, the arguments in parts."""
    for delta in deltas:
        if not isinstance(delta, dict):
            continue
        index = delta.get("index", len(calls))
        while len(calls) <= index:
            calls.append({"id": None, "type": "function", "function": {"name": "", "arguments": ""}})
        call = calls[index]
        if delta.get("id"):
            call["id"] = delta["id"]
        if delta.get("type"):
            call["type"] = delta["type"]
        function = delta.get("function") or {}
        call["function"]["name"] += function.get("name") or ""
        call["function"]["arguments"] += function.get("arguments") or ""


def chat_completion(chunks: list[dict]) -> dict:
    """The `chat.completion` that a stream of `chat.completion.chunk` events adds up to."""
    first = chunks[0]
    document = {
        "id": first.get("id"),
        "object": "chat.completion",
        "created": first.get("created"),
        "model": first.get("model"),
    }
    if first.get("system_fingerprint") is not None:
        document["system_fingerprint"] = first["system_fingerprint"]
    choices: dict[int, dict] = {}
    usage = None
    for chunk in chunks:
        if chunk.get("usage"):
            usage = chunk["usage"]
        for part in chunk.get("choices") or []:
            index = part.get("index", 0)
            choice = choices.setdefault(
                index,
                {"index": index, "message": {"role": "assistant", "content": None}, "finish_reason": None},
            )
            delta = part.get("delta") or {}
            message = choice["message"]
            if delta.get("role"):
                message["role"] = delta["role"]
            for text_field in ("content", "refusal"):
                if delta.get(text_field) is not None:
                    message[text_field] = (message.get(text_field) or "") + delta[text_field]
            if delta.get("tool_calls"):
                _merge_tool_calls(message.setdefault("tool_calls", []), delta["tool_calls"])
            if part.get("finish_reason") is not None:
                choice["finish_reason"] = part["finish_reason"]
            if part.get("logprobs") is not None:
                choice["logprobs"] = part["logprobs"]
    document["choices"] = [choices[index] for index in sorted(choices)]
    document["usage"] = usage
    return document


def text_completion(chunks: list[dict]) -> dict:
    """The `text_completion` that a stream of legacy completion chunks adds up to."""
    first = chunks[0]
    choices: dict[int, dict] = {}
    usage = None
    for chunk in chunks:
        if chunk.get("usage"):
            usage = chunk["usage"]
        for part in chunk.get("choices") or []:
            index = part.get("index", 0)
            choice = choices.setdefault(index, {"index": index, "text": "", "finish_reason": None, "logprobs": None})
            choice["text"] += part.get("text") or ""
            if part.get("finish_reason") is not None:
                choice["finish_reason"] = part["finish_reason"]
    return {
        "id": first.get("id"),
        "object": "text_completion",
        "created": first.get("created"),
        "model": first.get("model"),
        "choices": [choices[index] for index in sorted(choices)],
        "usage": usage,
    }


def assemble(events: list):
    """The final document of a known stream, else None."""
    documents = [event for event in events if isinstance(event, dict)]
    chunks = [d for d in documents if d.get("object") == "chat.completion.chunk"]
    if chunks:
        return chat_completion(chunks)
    completions = [d for d in documents if d.get("object") == "text_completion"]
    if completions:
        return text_completion(completions)
    for document in reversed(documents):
        if document.get("type") == "response.completed" and isinstance(document.get("response"), dict):
            return document["response"]
    return None


def readable(headers, body: bytes) -> dict:
    """`body` (and `events` for a stream) as the job document shows them; {} when the bytes are
    not text (the caller then gives them as base64)."""
    try:
        text = body.decode()
    except UnicodeDecodeError:
        return {}
    kind = content_type(headers)
    if is_json_type(kind):
        try:
            return {"body": json.loads(text)}
        except ValueError:
            return {"body": text}
    if kind == "text/event-stream":
        events = sse_events(text)
        final = assemble(events)
        return {"body": text if final is None else final, "events": events}
    return {"body": text}
