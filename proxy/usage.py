"""Token usage read from the answer as it passes: OpenAI-style `usage` in JSON or in SSE chunks.

The client's bytes are never held back: the tracker looks at a copy of each chunk. JSON bodies
are kept (up to MAX_JSON_BYTES) to be parsed at the end; SSE streams are read line by line and
only lines that mention "usage" are parsed.

Whatever the upstream sends, the tracker's memory and work stay bounded (it only needs the usage):
a compressed answer is inflated DECODE_STEP bytes at a time and only its first MAX_DECODED_BYTES
are looked at (a gzip bomb stops there); an SSE line longer than MAX_LINE_BYTES is skipped, not
kept; a JSON answer beyond MAX_JSON_BYTES keeps only its tail.

Streamed OpenAI-style calls are asked to end with their usage (ask_for_usage), and a call cut
before its usage arrived gets an estimate (UsageTracker.estimate), so cut streams still count.
"""

import json
import re
import zlib

MAX_JSON_BYTES = 4 * 1024 * 1024
TAIL_BYTES = 64 * 1024
MAX_LINE_BYTES = 1024 * 1024  # a usage line is a few hundred bytes
MAX_DECODED_BYTES = 64 * 1024 * 1024  # of one compressed answer
DECODE_STEP = 64 * 1024
BYTES_PER_TOKEN = 4  # the usual rule of thumb for English text with OpenAI's tokenizers
USAGE_FIELDS = ("prompt_tokens", "completion_tokens", "total_tokens")
USAGE_OBJECT = re.compile(rb'"usage"\s*:\s*(\{[^{}]*\})')
# The generated text in a streamed chunk: chat's delta "content" (and "reasoning_content"),
# legacy completions' "text". Counted as sent, JSON escapes included.
CONTENT = re.compile(rb'"(?:content|reasoning_content|text)"\s*:\s*"((?:[^"\\]|\\.)*)"')
STREAMING_PATHS = ("/chat/completions", "/completions")


def ask_for_usage(path: str, body: bytes, document):
    """(body, document) of an OpenAI-style streaming call, asking the upstream for its usage.

    `"stream_options": {"include_usage": true}` makes the upstream end the stream with a chunk
    carrying the usage (`"choices": []`). It is set even when the client said false: the
    gateway needs the usage for quotas. The chunk is passed to the client unchanged (the
    OpenAI SDKs expect it; a client that reads `choices[0]` of every chunk must skip it).
    Other calls are returned as they are.
    """
    if not path.endswith(STREAMING_PATHS) or b'"stream"' not in body:
        return body, document
    if document is None:
        try:
            document = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            return body, None
    if not isinstance(document, dict) or document.get("stream") is not True:
        return body, document
    options = document.get("stream_options")
    if isinstance(options, dict) and options.get("include_usage") is True:
        return body, document
    options = options if isinstance(options, dict) else {}
    document = {**document, "stream_options": {**options, "include_usage": True}}
    return json.dumps(document).encode(), document


def _tokens(size: int) -> int:
    return -(-size // BYTES_PER_TOKEN)  # rounded up: a started token counts


def _usage_from(obj) -> dict | None:
    usage = obj.get("usage") if isinstance(obj, dict) else None
    if not isinstance(usage, dict):
        return None
    found = {f: int(usage[f]) for f in USAGE_FIELDS if isinstance(usage.get(f), (int, float))}
    if not found:
        return None
    if "total_tokens" not in found:
        found["total_tokens"] = found.get("prompt_tokens", 0) + found.get("completion_tokens", 0)
    return found


def _decoder(content_encoding: str):
    encoding = content_encoding.strip().lower()
    if encoding in ("", "identity"):
        return None
    if encoding in ("gzip", "x-gzip"):
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if encoding == "deflate":
        return zlib.decompressobj()
    return False  # an encoding we cannot read (br, zstd): no usage


class UsageTracker:
    def __init__(self, content_type: str, content_encoding: str = ""):
        media = content_type.split(";")[0].strip().lower()
        self.sse = media == "text/event-stream"
        self.json = media == "application/json" or media.endswith("+json")
        self.decoder = _decoder(content_encoding)
        self.active = (self.sse or self.json) and self.decoder is not False
        self.usage: dict | None = None
        self.decoded = 0  # bytes looked at (after decompression)
        self.content_bytes = 0  # generated text seen in SSE chunks (for an estimate)
        self._buffer = bytearray()
        self._overflow = False
        self._skipping = False  # inside an SSE line too long to keep

    def feed(self, chunk: bytes) -> None:
        if not self.active:
            return
        if self.decoder is None:
            self.decoded += len(chunk)
            self._take(chunk)
            return
        try:
            while True:
                piece = self.decoder.decompress(chunk, DECODE_STEP)
                chunk = self.decoder.unconsumed_tail
                self.decoded += len(piece)
                if self.decoded > MAX_DECODED_BYTES:  # a bomb, or simply too much: stop looking
                    self._stop()
                    return
                self._take(piece)
                if not chunk and len(piece) < DECODE_STEP:
                    return
        except zlib.error:
            self._stop()

    def _stop(self) -> None:
        self.active = False
        self._buffer = bytearray()

    def _take(self, data: bytes) -> None:
        if self.sse:
            self._feed_sse(data)
        else:
            self._feed_json(data)

    def _feed_sse(self, chunk: bytes) -> None:
        end = chunk.rfind(b"\n")
        if end < 0:
            if not self._skipping:
                self._buffer += chunk
                if len(self._buffer) > MAX_LINE_BYTES:  # a line that never ends: skip it
                    self._buffer = bytearray()
                    self._skipping = True
            return
        start = 0
        if self._skipping:  # the rest of the over-long line is dropped too
            start = chunk.find(b"\n") + 1
            self._skipping = False
        lines = bytes(self._buffer) + chunk[start : end + 1]
        self._buffer = bytearray(chunk[end + 1 :])
        if len(self._buffer) > MAX_LINE_BYTES:
            self._buffer = bytearray()
            self._skipping = True
        for text in CONTENT.findall(lines):
            self.content_bytes += len(text)
        if b'"usage"' not in lines:  # most chunks: no line to parse
            return
        for line in lines.split(b"\n"):
            if line.startswith(b"data:") and b'"usage"' in line:
                try:
                    usage = _usage_from(json.loads(line[5:]))
                except ValueError:
                    continue
                if usage:
                    self.usage = usage

    def _feed_json(self, chunk: bytes) -> None:
        self._buffer += chunk
        if len(self._buffer) > MAX_JSON_BYTES:
            # Too big to parse whole: keep the tail, where `usage` usually is.
            self._overflow = True
            del self._buffer[:-TAIL_BYTES]

    def finish(self) -> dict | None:
        """The usage seen, once the whole answer has passed."""
        if self.active and self.json and self._buffer:
            if not self._overflow:
                try:
                    self.usage = _usage_from(json.loads(self._buffer))
                except ValueError:
                    pass
            else:
                found = USAGE_OBJECT.findall(self._buffer)
                if found:  # the last one: a top-level usage follows any nested ones
                    try:
                        self.usage = _usage_from({"usage": json.loads(found[-1])})
                    except ValueError:
                        pass
        elif self.active and self.sse and self._buffer:
            self._feed_sse(b"\n")
        self._buffer = bytearray()
        return self.usage

    def estimate(self, request_bytes: int, answer_bytes: int) -> dict:
        """Tokens of a call cut before its usage arrived, at BYTES_PER_TOKEN bytes a token.

        Prompt: the request body. Completion: the generated text seen in an SSE stream, the
        (decompressed) bytes seen of a JSON answer, or the bytes sent when neither could be read.
        JSON and SSE framing make this an overestimate for short texts, never a free call.
        """
        if self.active and self.sse:
            seen = self.content_bytes
        elif self.active and self.json:
            seen = self.decoded
        else:
            seen = answer_bytes
        prompt, completion = _tokens(request_bytes), _tokens(seen)
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
