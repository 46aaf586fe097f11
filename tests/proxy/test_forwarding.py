"""What the upstream receives, and what the client gets back."""

import re
import socket
import time

import pytest
import requests
from django.test import override_settings

from proxy.pinning import PinnedHTTPConnection
from tests.factories import auth, make_key, make_route, make_target
from tests.upstream import json_reply

pytestmark = pytest.mark.django_db

UUID_HEX = re.compile(r"^[0-9a-f]{32}$")


@pytest.fixture
def route(upstream):
    return make_route(upstream.url, methods="GET,POST,PUT,PATCH,DELETE")


@pytest.fixture
def secret(route):
    return make_key(routes=[route])[1]


def body_of(response) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else response.content


def test_method_path_query_and_body_arrive_unchanged(client, upstream, secret):
    body = bytes(range(256)) * 4  # not UTF-8, not JSON: bytes must pass untouched
    response = client.generic(
        "PUT",
        "/v1/files/report%20v2.bin?b=2&a=1&a=%C3%A9&empty=",
        body,
        content_type="application/octet-stream",
        **auth(secret),
    )
    assert response.status_code == 200
    received = upstream.last
    assert received.method == "PUT"
    assert received.path == "/files/report%20v2.bin"
    assert received.query == "b=2&a=1&a=%C3%A9&empty="
    assert received.body == body
    assert received.headers["content-type"] == "application/octet-stream"
    assert received.headers["content-length"] == str(len(body))


@pytest.mark.parametrize("method", ["GET", "POST", "PATCH", "DELETE"])
def test_each_method_is_forwarded_as_is(client, upstream, secret, method):
    response = client.generic(method, "/v1/things/7", b"", **auth(secret))
    assert response.status_code == 200
    assert (upstream.last.method, upstream.last.path) == (method, "/things/7")


def test_target_url_path_is_kept_before_the_rest_of_the_path(client, upstream):
    route = make_route(name="deep", path_prefix="/ai/openai")
    make_target(route, f"{upstream.url}/api/v1/")
    _, secret = make_key(routes=[route])
    client.get("/ai/openai/models?x=1", **auth(secret))
    assert (upstream.last.path, upstream.last.query) == ("/api/v1/models", "x=1")


def test_end_to_end_headers_are_forwarded(client, upstream, secret):
    client.post(
        "/v1/chat",
        b"{}",
        content_type="application/json",
        HTTP_ACCEPT="text/event-stream",
        HTTP_OPENAI_ORGANIZATION="org-1",
        HTTP_X_CUSTOM="kept",
        **auth(secret),
    )
    headers = upstream.last.headers
    assert headers["accept"] == "text/event-stream"
    assert headers["openai-organization"] == "org-1"
    assert headers["x-custom"] == "kept"
    assert headers["content-type"] == "application/json"


def test_hop_by_hop_request_headers_are_dropped_including_those_named_in_connection(client, upstream, secret):
    client.post(
        "/v1/chat",
        b"{}",
        content_type="application/json",
        HTTP_CONNECTION="keep-alive, X-Hop-One, x-hop-two",
        HTTP_X_HOP_ONE="1",
        HTTP_X_HOP_TWO="2",
        HTTP_KEEP_ALIVE="timeout=5",
        HTTP_TE="trailers",
        HTTP_UPGRADE="websocket",
        HTTP_TRAILER="X-Sum",
        HTTP_PROXY_AUTHORIZATION="Basic c2VjcmV0",
        HTTP_PROXY_CONNECTION="keep-alive",
        HTTP_X_END_TO_END="kept",
        **auth(secret),
    )
    headers = upstream.last.headers
    for name in (
        "x-hop-one",
        "x-hop-two",
        "keep-alive",
        "te",
        "upgrade",
        "trailer",
        "proxy-authorization",
        "proxy-connection",
    ):
        assert name not in headers, name
    assert headers.get("connection", "keep-alive").lower() in ("keep-alive", "close")  # the gateway's own hop
    assert headers["x-end-to-end"] == "kept"


def test_hop_by_hop_response_headers_are_dropped_including_those_named_in_connection(client, upstream, secret):
    upstream.reply = json_reply(
        {"ok": True},
        headers={
            "Connection": "X-Upstream-Hop",
            "X-Upstream-Hop": "secret-ish",
            "Keep-Alive": "timeout=5",
            "Proxy-Authenticate": "Basic",
            "Trailer": "X-Sum",
            "X-Upstream-Kept": "yes",
        },
    )
    response = client.get("/v1/models", **auth(secret))
    assert response.status_code == 200
    for name in ("Connection", "X-Upstream-Hop", "Keep-Alive", "Proxy-Authenticate", "Trailer", "Transfer-Encoding"):
        assert not response.has_header(name), name
    assert response["X-Upstream-Kept"] == "yes"
    assert response["Content-Type"] == "application/json"
    assert body_of(response) == b'{"ok": true}'


def test_client_credentials_and_cookies_are_never_forwarded(client, upstream, route):
    _, secret = make_key(routes=[route])
    client.cookies["sessionid"] = "admin-session"
    client.get("/v1/models", HTTP_AUTHORIZATION=f"Bearer {secret}", HTTP_X_API_KEY=secret)
    client.get("/v1/models", HTTP_X_API_KEY=secret)
    for received in upstream.requests[-2:]:
        assert "authorization" not in received.headers
        assert "x-api-key" not in received.headers
        assert "cookie" not in received.headers
        assert secret not in repr(received.headers)


def test_the_targets_credential_header_is_added(client, upstream):
    route = make_route(name="with-credential")
    make_target(route, upstream.url, credential_header="Authorization", credential_value="Bearer sk-upstream-123")
    _, secret = make_key(routes=[route])
    client.get("/v1/models", **auth(secret))
    assert upstream.last.headers["authorization"] == "Bearer sk-upstream-123"


def test_a_custom_credential_header_is_added_and_the_clients_key_is_not(client, upstream):
    route = make_route(name="api-key-upstream")
    make_target(route, upstream.url, credential_header="api-key", credential_value="azure-secret-value")
    _, secret = make_key(routes=[route])
    client.get("/v1/models", HTTP_X_API_KEY=secret)
    assert upstream.last.headers["api-key"] == "azure-secret-value"
    assert "x-api-key" not in upstream.last.headers


def test_forwarded_headers_are_set(client, upstream, secret):
    client.get("/v1/models", REMOTE_ADDR="203.0.113.9", HTTP_HOST="localhost:8443", **auth(secret))
    headers = upstream.last.headers
    assert headers["x-forwarded-for"] == "203.0.113.9"
    assert headers["x-forwarded-proto"] == "http"
    assert headers["x-forwarded-host"] == "localhost:8443"
    assert headers["host"] == f"127.0.0.1:{upstream.port}"  # the upstream's own host, not the client's


SPOOFED = {
    "HTTP_X_FORWARDED_FOR": "10.0.0.1",
    "HTTP_X_REAL_IP": "10.0.0.2",
    "HTTP_FORWARDED": "for=10.0.0.3;proto=https",
    "HTTP_TRUE_CLIENT_IP": "10.0.0.4",
    "HTTP_X_CLIENT_IP": "10.0.0.5",
}


def test_a_clients_own_forwarding_headers_never_reach_the_upstream(client, upstream, secret):
    client.get("/v1/models", secure=True, REMOTE_ADDR="198.51.100.7", HTTP_HOST="localhost", **SPOOFED, **auth(secret))
    headers = upstream.last.headers
    assert headers["x-forwarded-for"] == "198.51.100.7"  # no proxy is trusted: only the peer
    assert headers["x-real-ip"] == "198.51.100.7"
    assert headers["forwarded"] == 'for=198.51.100.7;proto=https;host="localhost"'
    assert headers["x-forwarded-proto"] == "https"
    assert "true-client-ip" not in headers and "x-client-ip" not in headers
    assert "10.0.0." not in repr(headers)


@override_settings(TRUSTED_PROXY_COUNT=1)
def test_behind_a_trusted_proxy_only_the_part_of_the_chain_it_vouched_for_is_kept(client, upstream, secret):
    # The client wrote 6.6.6.6 itself; the proxy (10.1.1.1) appended the address it saw.
    client.get(
        "/v1/models",
        REMOTE_ADDR="10.1.1.1",
        HTTP_X_FORWARDED_FOR="6.6.6.6, 2001:db8::7",
        HTTP_X_REAL_IP="6.6.6.6",
        HTTP_FORWARDED="for=6.6.6.6",
        **auth(secret),
    )
    headers = upstream.last.headers
    assert headers["x-forwarded-for"] == "2001:db8::7, 10.1.1.1"
    assert headers["x-real-ip"] == "2001:db8::7"
    assert headers["forwarded"] == 'for="[2001:db8::7]";proto=http;host="testserver"'  # RFC 7239 §6
    assert "6.6.6.6" not in repr(headers)


def test_a_sane_request_id_is_kept_upstream_and_in_the_answer(client, upstream, secret):
    response = client.get("/v1/models", HTTP_X_REQUEST_ID="req-2024.abc:42_x", **auth(secret))
    assert upstream.last.headers["x-request-id"] == "req-2024.abc:42_x"
    assert response["X-Request-ID"] == "req-2024.abc:42_x"


@pytest.mark.parametrize("bad", ["has space", "<script>alert(1)</script>", "a" * 129, "é-unicode", "x\ty"])
def test_an_insane_request_id_is_replaced_everywhere(client, upstream, secret, bad):
    response = client.get("/v1/models", HTTP_X_REQUEST_ID=bad, **auth(secret))
    new_id = response["X-Request-ID"]
    assert new_id != bad and UUID_HEX.match(new_id)
    assert upstream.last.headers["x-request-id"] == new_id


def test_a_request_id_is_made_when_none_is_sent_and_upstreams_own_is_not_returned(client, upstream, secret):
    upstream.reply = json_reply({"ok": True}, headers={"X-Request-ID": "upstream-made-this"})
    response = client.get("/v1/models", **auth(secret))
    assert UUID_HEX.match(response["X-Request-ID"])
    assert upstream.last.headers["x-request-id"] == response["X-Request-ID"]


@pytest.mark.parametrize(
    "path, kwargs, status",
    [
        ("/v1/models", {}, 401),
        ("/nowhere/at/all", "key", 404),
        ("/api/not-yet", {}, 404),
    ],
)
def test_the_request_id_is_returned_on_errors_too(client, secret, path, kwargs, status):
    extra = auth(secret) if kwargs == "key" else kwargs
    response = client.get(path, HTTP_X_REQUEST_ID="trace-me-1", **extra)
    assert response.status_code == status
    assert response["X-Request-ID"] == "trace-me-1"
    assert response.json()["error"]["request_id"] == "trace-me-1"


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_redirects_are_returned_not_followed(client, upstream, secret, status):
    upstream.reply = json_reply({"moved": True}, status=status, headers={"Location": "/elsewhere"})
    response = client.post("/v1/chat", b'{"a": 1}', content_type="application/json", **auth(secret))
    assert response.status_code == status
    assert response["Location"] == "/elsewhere"
    assert body_of(response) == b'{"moved": true}'
    assert len(upstream.requests) == 1  # nobody went to /elsewhere


def test_upstream_error_statuses_and_bodies_pass_through(client, upstream, secret):
    upstream.reply = json_reply({"error": {"message": "model overloaded"}}, status=429, headers={"Retry-After": "3"})
    response = client.get("/v1/models", **auth(secret))
    assert response.status_code == 429
    assert response["Retry-After"] == "3"
    assert body_of(response) == b'{"error": {"message": "model overloaded"}}'


def test_a_cookie_set_by_an_upstream_is_passed_back_but_never_replayed_on_later_calls(client, upstream, secret):
    upstream.reply = json_reply({"ok": True}, headers={"Set-Cookie": "lb=node-3; Path=/"})
    first = client.get("/v1/models", **auth(secret))
    assert "lb=node-3" in first["Set-Cookie"]  # the client's business
    client.cookies.clear()
    client.get("/v1/models", **auth(secret))
    assert "cookie" not in upstream.last.headers  # the gateway's shared client kept nothing


def test_a_compressed_redirect_body_is_returned_byte_for_byte(client, upstream, secret):
    import gzip

    packed = gzip.compress(b'{"see": "elsewhere"}')

    def reply(handler):
        handler.send_response(302)
        handler.send_header("Location", "https://example.org/next")
        handler.send_header("Content-Encoding", "gzip")
        handler.send_header("Content-Length", str(len(packed)))
        handler.end_headers()
        handler.wfile.write(packed)

    upstream.reply = reply
    response = client.get("/v1/models", **auth(secret))
    assert response.status_code == 302
    assert response["Content-Encoding"] == "gzip"
    assert body_of(response) == packed


def test_encoded_reserved_characters_in_the_path_stay_encoded(client, upstream, secret):
    # Decoded, %3F would start a query string upstream, %23 a fragment, and %25 an escape.
    client.get("/v1/files/what%3Fis%23this%25x%20y/caf%C3%A9?q=1", **auth(secret))
    assert upstream.last.path == "/files/what%3Fis%23this%25x%20y/caf%C3%A9"
    assert upstream.last.query == "q=1"


def test_through_a_real_server_the_raw_path_and_chunked_bodies_are_forwarded(cluster, upstream):
    """gunicorn keeps the raw path (%2F stays %2F) and passes chunked bodies on (Django alone reads none)."""
    secret = cluster.shell(
        "from routes_admin.models import APIKey, Route, UpstreamTarget\n"
        "route = Route.objects.create(name='r', path_prefix='/v1', max_body_bytes=1000)\n"
        f"UpstreamTarget.objects.create(route=route, url='{upstream.url}')\n"
        "key, secret = APIKey.objects.issue(name='k', all_routes=True)\n"
        "print(secret)"
    ).strip()
    gateway = cluster.start()
    headers = {"Authorization": f"Bearer {secret}", "Content-Type": "application/json"}
    raw = requests.get(f"{gateway.url}/v1/models/org%2Fmodel%3Fv%20x/info?a=%2F", headers=headers, timeout=10)
    assert raw.status_code == 200
    assert (upstream.last.path, upstream.last.query) == ("/models/org%2Fmodel%3Fv%20x/info", "a=%2F")  # %2F is not /

    pieces = [b'{"model": ', b'"m", "messages": ', b"[]}"]
    response = requests.post(f"{gateway.url}/v1/chat", data=iter(pieces), headers=headers, timeout=10)
    assert response.status_code == 200
    assert upstream.last.body == b"".join(pieces)
    assert upstream.last.headers["content-length"] == str(len(b"".join(pieces)))
    assert "transfer-encoding" not in upstream.last.headers

    too_big = requests.post(f"{gateway.url}/v1/chat", data=iter([b"x" * 600, b"y" * 600]), headers=headers, timeout=10)
    assert too_big.status_code == 413
    assert too_big.json()["error"]["type"] == "request_too_large"
    assert len(upstream.requests) == 2  # the too-big body never left the gateway


def test_a_pooled_connection_the_upstream_closed_is_replaced_not_reused(client, upstream):
    """An upstream may close a kept-alive connection right after its answer, without saying so:
    the next call still succeeds, on a new connection, with a single attempt allowed."""
    route = make_route(upstream.url, max_attempts=1)
    _, secret = make_key(routes=[route])

    def answer_then_close(handler):
        handler.send_json(200, {"ok": True})
        handler.close_connection = True

    upstream.reply = answer_then_close
    statuses = []
    for _ in range(3):
        statuses.append(client.post("/v1/x", b"{}", content_type="application/json", **auth(secret)).status_code)
        time.sleep(0.05)  # the upstream's FIN arrives
    assert statuses == [200, 200, 200]
    assert len({received.peer for received in upstream.requests}) == 3  # a new connection each


def test_a_connection_is_connected_until_its_peer_closes_it():
    with socket.create_server(("127.0.0.1", 0)) as listener:
        connection = PinnedHTTPConnection("127.0.0.1", listener.getsockname()[1])
        connection.connect()
        peer, _ = listener.accept()
        assert connection.is_connected
        peer.close()
        for _ in range(100):
            if not connection.is_connected:
                break
            time.sleep(0.01)
        assert not connection.is_connected
        connection.close()
        assert not connection.is_connected
