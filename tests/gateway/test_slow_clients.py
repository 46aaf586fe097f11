"""Slow or stalling clients cannot hold a worker: real sockets against a real gunicorn (tests/servers.py)."""

import json
import socket
import threading
import time

import pytest
import requests

HEAD_TIMEOUT = 2  # GATEWAY_HEADER_TIMEOUT for these servers
BODY_TIMEOUT = 3  # GATEWAY_BODY_TIMEOUT


def connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def closed_by_server(sock: socket.socket, within: float) -> tuple[bool, bytes]:
    """Whether the server closed the connection within `within` seconds, and what it sent first."""
    sock.settimeout(within)
    received = b""
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return True, received
            received += data
    except (ConnectionResetError, BrokenPipeError):
        return True, received
    except TimeoutError:
        return False, received


def read_response(sock: socket.socket) -> tuple[int, dict, bytes]:
    """One HTTP/1.1 response with a Content-Length, read from a raw socket."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before the response head: {data!r}")
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    length = int(headers["content-length"])
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed after {len(body)} of {length} body bytes")
        body += chunk
    return status, headers, body[:length]


def healthz_answers(url: str) -> bool:
    try:
        return requests.get(f"{url}/healthz", timeout=5).status_code == 200
    except requests.RequestException:
        return False


@pytest.fixture
def gateway(cluster, upstream):
    """A gateway with short head and body timeouts and a low limit of connections waiting for a head."""
    cluster.secret = cluster.route_and_key(upstream.url, max_body_bytes=1000)
    return cluster.start(
        GATEWAY_HEADER_TIMEOUT=HEAD_TIMEOUT,
        GATEWAY_BODY_TIMEOUT=BODY_TIMEOUT,
        GATEWAY_BODY_READ_TIMEOUT=BODY_TIMEOUT,
        GATEWAY_MAX_WAITING_CONNECTIONS=50,
        GATEWAY_WORKER_CONNECTIONS=200,
        GATEWAY_DRAIN_MAX_BYTES=1024 * 1024,
    )


def test_a_half_sent_head_is_closed_after_the_header_timeout_while_healthz_answers(gateway):
    sock = connect(gateway.url)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
    assert healthz_answers(gateway.url)
    closed, _ = closed_by_server(sock, within=HEAD_TIMEOUT + 10)
    assert closed  # today it stays open for GATEWAY_KEEPALIVE (75 s)
    sock.close()


def test_a_half_sent_head_on_a_kept_alive_connection_is_closed_after_the_header_timeout(gateway):
    sock = connect(gateway.url)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    status, headers, _ = read_response(sock)
    assert status == 200 and headers["connection"] == "keep-alive"
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
    closed, _ = closed_by_server(sock, within=HEAD_TIMEOUT + 10)
    assert closed  # gunicorn alone gives it the whole keep-alive wait (75 s)
    sock.close()


def test_a_kept_alive_connection_serves_its_next_request_after_a_pause(gateway):
    sock = connect(gateway.url)
    for _ in range(2):
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert read_response(sock)[0] == 200
        time.sleep(HEAD_TIMEOUT + 1)  # idle longer than a head may take: the keep-alive wait applies
    # Two requests sent at once: the second is already read ahead when the first is answered.
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" * 2)
    answers = b""
    while answers.count(b"HTTP/1.1 200 ") < 2:
        data = sock.recv(65536)
        assert data, answers
        answers += data
    sock.close()


def test_a_dripped_body_is_cut_after_the_body_timeout_and_logged(gateway, cluster, upstream):
    sock = connect(gateway.url)
    sock.sendall(
        b"POST /v1/chat HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        + f"Authorization: Bearer {cluster.secret}\r\n".encode()
        + b"Content-Type: application/json\r\nContent-Length: 200\r\n\r\n{"
    )
    started = time.monotonic()
    answer = b""
    sock.settimeout(0.5)
    # Two bytes a second: each read arrives within the read timeout; only the total deadline cuts it.
    while time.monotonic() - started < BODY_TIMEOUT + 15:
        try:
            sock.sendall(b" ")
        except OSError:
            break
        try:
            data = sock.recv(65536)
            if not data:
                break
            answer += data
        except TimeoutError:
            pass
        time.sleep(0.5)
    sock.close()
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    body = json.loads(answer.split(b"\r\n\r\n", 1)[1])
    assert body["error"]["type"] == "request_timeout"
    assert upstream.requests == []
    # The call reached the proxy, so it has its log row.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        rows = cluster.shell(
            "from routes_admin.models import RequestLog\n"
            "print(list(RequestLog.objects.values_list('status', 'error_type')))"
        ).strip()
        if "408" in rows:
            break
        time.sleep(0.3)
    assert rows == "[(408, 'request_timeout')]"


def test_hundreds_of_idle_half_open_connections_do_not_stop_healthz(gateway, cluster):
    held = []
    try:
        for _ in range(300):  # more than GATEWAY_WORKER_CONNECTIONS, six times the waiting limit
            sock = connect(gateway.url)
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            held.append(sock)
        time.sleep(0.5)
        for _ in range(5):
            assert healthz_answers(gateway.url)
        answer = requests.post(
            f"{gateway.url}/v1/chat", json={}, headers={"Authorization": f"Bearer {cluster.secret}"}, timeout=10
        )
        assert answer.status_code == 200
    finally:
        for sock in held:
            sock.close()


def test_a_large_chunked_body_over_the_limit_gets_its_413_every_time(gateway, cluster):
    head = (
        b"POST /v1/chat HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        + f"Authorization: Bearer {cluster.secret}\r\n".encode()
        + b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    piece = b"x" * 65536
    chunk = b"%x\r\n%s\r\n" % (len(piece), piece)
    for attempt in range(20):
        sock = connect(gateway.url)

        def send_body(sock=sock):
            try:
                sock.sendall(head)
                for _ in range(64):  # 4 MB, far over the route's 1,000 bytes
                    sock.sendall(chunk)
                sock.sendall(b"0\r\n\r\n")
            except OSError:
                pass  # the gateway stopped reading: expected once it has answered

        sender = threading.Thread(target=send_body)
        sender.start()
        try:
            status, _, body = read_response(sock)
        finally:
            sender.join(timeout=30)
            sock.close()
        assert status == 413, attempt
        assert json.loads(body)["error"]["type"] == "request_too_large"


def test_an_endless_body_over_the_limit_is_answered_then_the_connection_closed(gateway, cluster):
    sock = connect(gateway.url)
    sending = threading.Event()
    sending.set()

    def send_forever():
        try:
            sock.sendall(
                b"POST /v1/chat HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                + f"Authorization: Bearer {cluster.secret}\r\n".encode()
                + b"Transfer-Encoding: chunked\r\n\r\n"
            )
            piece = b"%x\r\n%s\r\n" % (65536, b"x" * 65536)
            while sending.is_set():
                sock.sendall(piece)
        except OSError:
            pass

    sender = threading.Thread(target=send_forever)
    sender.start()
    try:
        status, _, _ = read_response(sock)
        assert status == 413
        # The rest is dropped only up to GATEWAY_DRAIN_MAX_BYTES; then the gateway closes.
        closed, _ = closed_by_server(sock, within=BODY_TIMEOUT + 10)
        assert closed
    finally:
        sending.clear()
        sock.close()
        sender.join(timeout=30)
