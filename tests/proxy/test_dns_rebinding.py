"""The forwarder connects to the address the SSRF guard checked (DNS rebinding)."""

import shutil
import socket
import ssl
import subprocess
import time

import pytest
import requests

from proxy import forwarding
from tests.factories import auth, make_key, make_route
from tests.upstream import UpstreamServer

pytestmark = pytest.mark.django_db

NAME = "rebinding.test"


@pytest.fixture
def rebinding_resolver(monkeypatch, upstream, fresh_runtime):
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
    yield other, answers
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


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    """A self-signed certificate that names only `localhost` (openssl makes it, once per module)."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.fixture
def tls_upstream(certificate):
    """A real HTTPS server on 127.0.0.1 with that certificate."""
    cert, key = certificate
    server = UpstreamServer()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.httpd.socket = context.wrap_socket(server.httpd.socket, server_side=True)
    yield server, str(cert)
    server.stop()


@pytest.mark.parametrize("name, verified", [("localhost", True), ("other-name.test", False)])
def test_tls_to_a_pinned_address_checks_the_certificate_against_the_name(tls_upstream, name, verified, fresh_runtime):
    """The connection goes to the pinned 127.0.0.1, but SNI and the certificate check use the name."""
    server, ca = tls_upstream
    fresh_runtime.ssrf.pins[name] = (["127.0.0.1"], time.monotonic())
    url = f"https://{name}:{server.port}/v1/models"
    request = requests.Request("GET", url).prepare()
    adapter = forwarding.session().get_adapter(url)
    try:
        if verified:
            response = adapter.send(request, timeout=5, verify=ca)
            assert response.status_code == 200
            assert server.last.headers["host"] == f"{name}:{server.port}"
        else:
            with pytest.raises(requests.exceptions.SSLError, match="other-name.test"):
                adapter.send(request, timeout=5, verify=ca)
            assert server.requests == []
    finally:
        fresh_runtime.ssrf.pins.pop(name, None)
