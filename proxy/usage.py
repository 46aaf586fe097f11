"""Token usage read from the answer as it passes: OpenAI-style `usage` in JSON or in SSE chunks.

The client's bytes are never held back: the tracker looks at a copy of each chunk. JSON bodies
are kept (up to MAX_JSON_BYTES) to be parsed at the end; SSE streams are read line by line and
only lines that mention "usage" are parsed.
"""

import json
import re
import zlib

MAX_JSON_BYTES = 4 * 1024 * 1024
TAIL_BYTES = 64 * 1024
USAGE_FIELDS = ("prompt_tokens", "completion_tokens", "total_tokens")
USAGE_OBJECT = re.compile(rb'"usage"\s*:\s*(\{[^{}]*\})')


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
        self._buffer = bytearray()
        self._overflow = False

    def feed(self, chunk: bytes) -> None:
        if not self.active:
            return
        if self.decoder is not None:
            try:
                chunk = self.decoder.decompress(chunk)
            except zlib.error:
                self.active = False
                return
        if self.sse:
            self._feed_sse(chunk)
        else:
            self._feed_json(chunk)

    def _feed_sse(self, chunk: bytes) -> None:
        self._buffer += chunk
        if b"\n" not in chunk:
            if len(self._buffer) > MAX_JSON_BYTES:  # a line that never ends: stop looking
                self.active = False
            return
        *lines, rest = self._buffer.split(b"\n")
        self._buffer = bytearray(rest)
        for line in lines:
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
