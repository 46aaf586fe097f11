"""A real HTTP upstream on 127.0.0.1 whose behaviour each test sets.

server.reply = json_reply({"ok": True})           # every request gets this
server.reply = lambda h: h.send_json(503, {...})  # or any function of the handler
server.requests                                   # what arrived: method, path, query, headers, body
"""

import json
import socket
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from tests.servers import free_port


@dataclass
class Received:
    method: str
    path: str
    query: str
    headers: dict  # lower-cased names
    body: bytes

    def json(self):
        return json.loads(self.body)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def setup(self):
        super().setup()
        # Headers and body go out in separate writes: without this, Nagle's algorithm and the
        # client's delayed ACK hold the body back ~40 ms.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _handle(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        parts = urlsplit(self.path)
        self.received = Received(
            self.command, parts.path, parts.query, {k.lower(): v for k, v in self.headers.items()}, body
        )
        self.server.owner.requests.append(self.received)
        self.server.owner.reply(self)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _handle

    def send_json(self, status: int, payload, headers=None):
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def start_chunked(self, status: int = 200, content_type: str = "text/event-stream", headers=None):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Transfer-Encoding", "chunked")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()

    def send_chunk(self, data: bytes):
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def end_chunked(self):
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


def json_reply(payload, status: int = 200, headers=None):
    return lambda handler: handler.send_json(status, payload, headers)


def sse_reply(events: list, interval: float = 0.0):
    """A text/event-stream answer, one `data:` event per item, `interval` seconds apart."""

    def reply(handler):
        handler.start_chunked()
        for event in events:
            data = event if isinstance(event, str) else json.dumps(event)
            handler.send_chunk(f"data: {data}\n\n".encode())
            time.sleep(interval)
        handler.end_chunked()

    return reply


class UpstreamServer:
    def __init__(self):
        self.requests: list[Received] = []
        self.reply = json_reply({"ok": True})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.owner = self
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        # A short poll interval: stop() waits for it, once per test that uses an upstream.
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def last(self) -> Received:
        return self.requests[-1]

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def refused_url() -> str:
    return f"http://127.0.0.1:{free_port()}"  # nothing listens there: connection refused


def slow(seconds: float):
    def reply(handler):
        time.sleep(seconds)
        handler.send_json(200, {"too": "late"})

    return reply
