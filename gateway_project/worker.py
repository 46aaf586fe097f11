"""gunicorn's gevent worker, with a stop that neither hangs on idle clients nor works in a signal handler.

1. Idle keep-alive connections. Once told to stop (SIGTERM, or a restart after
   GATEWAY_MAX_REQUESTS), gunicorn's gevent worker waits until every connection is gone, and that
   includes a client's idle keep-alive connection: SDKs keep theirs open between calls for
   minutes. The worker would outlive the graceful timeout and be killed with the log rows it still
   had queued. Here each connection that waits for its next request is shut for reading: its
   handler reads a clean end of stream and returns. Calls in progress finish; gunicorn closes
   their connections after the answer, as it does for every call once stopping.
2. Work at stop time. A Python signal handler runs inside whichever greenlet happens to be
   running, in the middle of its work (a call's bookkeeping, say), and an exception or a switch
   there breaks that greenlet. So SIGTERM only sets `alive = False`, as in gunicorn; what stopping
   needs (closing idle connections, the `when_stopping` hooks) runs from the worker's own loop,
   which checks every second.
3. Slow and idle clients (gunicorn offers no read timeouts for its gevent worker, only the
   keep-alive wait). A request head must be complete within GATEWAY_HEADER_TIMEOUT of its first
   byte (of the connection, for the first request); a body must keep coming (a read waits at most GATEWAY_BODY_READ_TIMEOUT)
   and be complete within GATEWAY_BODY_TIMEOUT, or the call is answered 408 and the connection
   closed. Connections waiting for a request head (new or kept alive) are at most
   GATEWAY_MAX_WAITING_CONNECTIONS per worker: past that the oldest is closed, so idle or
   half-open connections never take every slot of the worker from /healthz and real calls.
4. Requests gunicorn refuses before Django sees them (a request line over 4,094 bytes, a header
   over 8,190, a malformed head): answered in the gateway's JSON error shape, not gunicorn's HTML
   page (`write_json_error`).
5. The end of a call (its log row, its budgets settled, its tokens counted: the answer's close())
   runs after the other answers that are ready in the same turn of the event loop have been sent
   (`CloseAfterOthers`). When many upstream answers arrive together (a batch client's N calls to
   a slow model), each answer then reaches its client without waiting for the bookkeeping of the
   ones before it; the bookkeeping still runs before the connection's next request is read.
6. Bodies the application did not read (a 413, a 401 before the body): the rest is read and
   dropped, within the body timeouts and up to GATEWAY_DRAIN_MAX_BYTES, so the connection can serve
   the next request. Past that the connection is closed the lingering way (our side shut for
   writing, the client's bytes read and dropped for a moment): closed at once with unread bytes,
   the kernel sends a reset that can reach the client before it has read the answer.
"""

import json
import socket
import sys
import time
import uuid

import gevent
from django.conf import settings
from gevent.socket import wait_read
from gunicorn import util
from gunicorn.workers.ggevent import GeventWorker

LINGER_SECONDS = 2.0  # RFC 9112 9.6: enough for the client to read the answer before the close
LINGER_MAX_BYTES = 1024 * 1024

# The error types of the gateway's JSON shape for the statuses gunicorn answers itself.
SERVER_ERROR_TYPES = {
    403: "permission_denied",
    414: "request_too_large",
    431: "request_too_large",
    500: "internal_error",
    501: "invalid_request_error",
}


def write_json_error(sock, status_int: int, reason: str, mesg: str) -> None:
    """gunicorn's `util.write_error`, in the gateway's one error shape; the connection is closed after it."""
    request_id = uuid.uuid4().hex
    error_type = SERVER_ERROR_TYPES.get(status_int, "invalid_request_error")
    message = f"{reason}: {mesg}"[:300] if mesg else reason  # gunicorn's message may echo a piece of the request
    body = json.dumps({"error": {"type": error_type, "message": message, "request_id": request_id}}).encode()
    head = (
        f"HTTP/1.1 {status_int} {reason}\r\n"
        "Connection: close\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"X-Request-ID: {request_id}\r\n\r\n"
    )
    util.write_nonblock(sock, head.encode("latin-1") + body)


# gunicorn's worker answers parse errors through this module function (workers/base.py, handle_error).
util.write_error = write_json_error


class BodyDeadline:
    """Bounds the socket reads of one request's body: each read and the whole of them.

    gunicorn reads through the connection's unreader; its `chunk` is replaced for the duration
    of one request (an instance attribute, removed again by `remove`).
    """

    def __init__(self, req, read_timeout: float, total_timeout: float):
        self.req, self.unreader = req, req.unreader
        self.read_timeout = read_timeout
        self.deadline = time.monotonic() + total_timeout
        self.timed_out = False
        self._chunk = self.unreader.chunk
        self.unreader.chunk = self.chunk

    def chunk(self, size_hint=None):
        timeout = min(self.read_timeout, self.deadline - time.monotonic())
        if timeout <= 0:
            self.give_up()
        timer = gevent.Timeout(timeout)
        timer.start()
        try:
            return self._chunk(size_hint)
        except gevent.Timeout as fired:
            if fired is not timer:
                raise
            self.give_up()
        finally:
            timer.close()

    def give_up(self):
        """Raised into whoever reads the body: in the proxy it becomes a 408 with its log row."""
        from proxy.errors import RequestTimeout  # the proxy loads with Django, after this module

        self.timed_out = True
        self.req.must_close = True  # the answer says Connection: close
        raise RequestTimeout()

    def remove(self):
        self.unreader.__dict__.pop("chunk", None)


class CloseAfterOthers:
    """A WSGI answer whose close() first lets the event loop run the other greenlets that are ready
    (gevent.sleep(0): one turn of the loop, so it cannot be put off for long under load)."""

    def __init__(self, answer):
        self.answer = answer

    def __iter__(self):
        return iter(self.answer)

    def close(self):
        try:
            gevent.sleep(0)
        finally:  # even when the greenlet is killed meanwhile: every call ends, and is recorded
            close = getattr(self.answer, "close", None)
            if close is not None:
                close()


class GatewayWorker(GeventWorker):
    def init_process(self):
        # greenlet -> its client socket while it waits for a request head: a new connection, or
        # one kept alive between two requests. Oldest first (dicts keep insertion order).
        self.idle_connections: dict = {}
        self.unreaders: dict = {}  # greenlet -> its connection's reader, once it has served a request
        self.when_stopping: list = []  # callables, each run once in a greenlet when stopping starts
        self._stop_seen = False
        super().init_process()

    def load_wsgi(self):
        super().load_wsgi()  # Django's settings are loaded from here on
        application = self.wsgi

        def wsgi(environ, start_response):
            answer = application(environ, start_response)
            if isinstance(answer, environ["wsgi.file_wrapper"]):
                return answer  # a file gunicorn sends itself (sendfile): no call to end
            return CloseAfterOthers(answer)

        self.wsgi = wsgi
        self.refuse_bad_settings()
        self.header_timeout = settings.GATEWAY_HEADER_TIMEOUT
        self.body_read_timeout = settings.GATEWAY_BODY_READ_TIMEOUT
        self.body_timeout = settings.GATEWAY_BODY_TIMEOUT
        self.drain_max_bytes = settings.GATEWAY_DRAIN_MAX_BYTES
        # Below the worker's connection limit, or waiting connections could still fill it.
        self.max_waiting = max(1, min(settings.GATEWAY_MAX_WAITING_CONNECTIONS, self.worker_connections // 2))

    def refuse_bad_settings(self):
        """The settings checks (gateway_project/checks.py) before serving: on an error the worker
        exits as one that failed to boot, and gunicorn's master stops with it."""
        from django.core.checks import run_checks
        from gunicorn.arbiter import Arbiter

        from gateway_project.checks import TAG

        problems = run_checks(tags=[TAG])
        for problem in problems:
            hint = f" ({problem.hint})" if problem.hint else ""
            log = self.log.error if problem.is_serious() else self.log.warning
            log("%s: %s%s", problem.id, problem.msg, hint)
        if any(problem.is_serious() for problem in problems):
            sys.exit(Arbiter.WORKER_BOOT_ERROR)

    def handle(self, listener, client, addr):
        current = gevent.getcurrent()
        while len(self.idle_connections) >= self.max_waiting:
            oldest = next(iter(self.idle_connections))
            self.shut_for_reading(self.idle_connections.pop(oldest))
        self.idle_connections[current] = client
        try:
            super().handle(listener, client, addr)
        finally:
            self.idle_connections.pop(current, None)
            self.unreaders.pop(current, None)

    def timeout_ctx(self):
        """How long the next request head may take (gunicorn reads it inside this context)."""
        current = gevent.getcurrent()
        if current in self.unreaders and current in self.idle_connections:
            # Kept alive: idle up to the keep-alive wait, then the head's own timeout.
            self.wait_for_next_request(self.idle_connections[current], self.unreaders[current])
        return gevent.Timeout(self.header_timeout, False)

    def wait_for_next_request(self, sock, unreader):
        """Until the next request's first byte (already read ahead, or arriving), or StopIteration:
        gunicorn closes the connection quietly, as after its own keep-alive wait."""
        if unreader.buf.getvalue():
            return  # pipelined: its bytes are already here
        wait_read(sock.fileno(), timeout=self.cfg.keepalive, timeout_exc=StopIteration())

    def handle_request(self, listener_name, req, sock, addr):
        current = gevent.getcurrent()
        self.idle_connections.pop(current, None)
        body_deadline = BodyDeadline(req, self.body_read_timeout, self.body_timeout)
        try:
            try:
                super().handle_request(listener_name, req, sock, addr)
                closing = False
            except StopIteration:  # gunicorn closes after this answer (stopping, Connection: close)
                closing = True
            body_read = self.finish_body(req, body_deadline)
        finally:
            body_deadline.remove()
        if not body_read:
            self.linger_and_close(sock)
            raise StopIteration()
        if closing:
            raise StopIteration()
        # Still here: the connection is kept alive and waits for its next request.
        self.idle_connections[current] = sock
        self.unreaders[current] = req.unreader

    def finish_body(self, req, body_deadline: "BodyDeadline") -> bool:
        """Read and drop what the application left of the body; False if that cannot be done."""
        if body_deadline.timed_out or req.body is None or getattr(req.body, "failed", False):
            return False
        drained = 0
        try:
            while drained <= self.drain_max_bytes:
                data = req.body.read(65536)
                if not data:
                    return True
                drained += len(data)
        except Exception:  # timed out, the client went away, or a malformed chunk
            pass
        return False

    def linger_and_close(self, sock):
        """Close after the answer without a reset: shut our side, then drop what the client still sends."""
        deadline = time.monotonic() + LINGER_SECONDS
        dropped = 0
        try:
            sock.shutdown(socket.SHUT_WR)
            while dropped < LINGER_MAX_BYTES:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                sock.settimeout(remaining)
                data = sock.recv(65536)
                if not data:
                    break  # the client has read the answer and closed
                dropped += len(data)
        except OSError:  # timed out, or the client is gone
            pass

    def notify(self):
        """The heartbeat: called every second while serving and while stopping."""
        super().notify()
        if self.alive:
            return
        if not self._stop_seen:
            self._stop_seen = True
            for hook in self.when_stopping:
                gevent.spawn(hook)
        self.close_idle_connections()

    def close_idle_connections(self):
        for sock in list(self.idle_connections.values()):
            self.shut_for_reading(sock)
        self.idle_connections.clear()

    @staticmethod
    def shut_for_reading(sock):
        """The handler waiting on this connection reads a clean end of stream and returns."""
        # Through a duplicate of the descriptor: gevent's own shutdown() would wake the waiting
        # handler with an error ("file descriptor was closed"); this way it reads a clean end.
        try:
            with socket.fromfd(sock.fileno(), sock.family, sock.type) as duplicate:
                duplicate.shutdown(socket.SHUT_RD)
        except OSError:  # the client closed it meanwhile
            pass
