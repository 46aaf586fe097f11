"""Issue 9, point 7: the forwarder connects to the address the SSRF guard checked (DNS rebinding)."""

import socket

import pytest

from proxy import ssrf
from tests.factories import auth, make_key, make_route
from tests.upstream import UpstreamServer

pytestmark = pytest.mark.django_db

NAME = "rebinding.test"


@pytest.fixture
def rebinding_resolver(monkeypatch, upstream):
    """A resolver whose first answer for NAME is the upstream (127.0.0.1) and every later one
    another server on 127.0.0.2, on the same port: a name rebound between check and connect."""
    other = UpstreamServer(host="127.0.0.2", port=upstream.port)
    real = socket.getaddrinfo
    answers = []

    def getaddrinfo(host, port, *args, **kwargs):
        if host != NAME:
            return real(host, port, *args, **kwargs)
        address = "127.0.0.1" if not answers else "127.0.0.2"
        answers.append(address)
        return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (address, port or 0))]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    ssrf._verdicts.clear()
    ssrf._pins.clear()
    yield other, answers
    ssrf._verdicts.clear()
    ssrf._pins.clear()
    other.stop()


def test_the_call_goes_to_the_checked_address_with_the_names_host_header(client, upstream, rebinding_resolver):
    other, answers = rebinding_resolver
    route = make_route(f"http://{NAME}:{upstream.port}/v1")
    _, secret = make_key(routes=[route])

    answers_read = []
    for _ in range(2):
        response = client.get("/v1/models", **auth(secret))
        answers_read.append((response.status_code, b"".join(response.streaming_content)))

    assert answers_read == [(200, b'{"ok": true}')] * 2
    assert other.requests == []  # the rebound address was never called
    assert [r.path for r in upstream.requests] == ["/v1/models", "/v1/models"]
    assert {r.headers["host"] for r in upstream.requests} == {f"{NAME}:{upstream.port}"}
    assert answers == ["127.0.0.1"]  # one lookup, by the guard; the connection used its answer
    assert upstream.requests[0].peer == upstream.requests[1].peer  # and the pooled connection is reused
