"""Requests gunicorn refuses before Django sees them are answered in the gateway's JSON error
shape, with a request id, never gunicorn's HTML page: an over-long request line (414), an
over-large header (431), a malformed request line (400)."""

import socket
from urllib.parse import urlsplit

import pytest
import requests


def is_error_shape(answer: requests.Response, status: int, error_type: str) -> None:
    assert answer.status_code == status
    assert answer.headers["Content-Type"] == "application/json"
    error = answer.json()["error"]
    assert error["type"] == error_type and error["message"]
    assert error["request_id"] == answer.headers["X-Request-ID"]
    assert "<html" not in answer.text


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    from tests.servers import GatewayCluster

    cluster = GatewayCluster(tmp_path_factory.mktemp("server-errors"))
    try:
        yield cluster.start()
    finally:
        cluster.close()


pytestmark = pytest.mark.slow


def test_a_7_kb_query_string_gets_the_json_414(gateway):
    answer = requests.get(f"{gateway.url}/v1/models?q={'a' * 7000}", timeout=10)
    is_error_shape(answer, 414, "request_too_large")


def test_an_over_large_header_gets_the_json_431(gateway):
    answer = requests.get(f"{gateway.url}/healthz", headers={"X-Big": "b" * 9000}, timeout=10)
    is_error_shape(answer, 431, "request_too_large")


def test_a_malformed_request_line_gets_the_json_400(gateway):
    port = urlsplit(gateway.url).port
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1 extra\r\nHost: x\r\n\r\n")
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 ")
    assert b"Content-Type: application/json" in head
    assert b'"type": "invalid_request_error"' in body and b"<html" not in body


def test_the_server_still_answers_after_them(gateway):
    assert requests.get(f"{gateway.url}/healthz", timeout=10).status_code == 200
