"""The errors the gateway makes itself, always in the JSON shape."""

import threading
from datetime import timedelta

import pytest
from django.test import override_settings
from django.utils import timezone

from tests.factories import auth, make_key, make_route, make_target
from tests.servers import free_port

pytestmark = pytest.mark.django_db

DEBUG_MODES = [pytest.param(False, id="debug-off"), pytest.param(True, id="debug-on")]


@pytest.fixture(params=DEBUG_MODES)
def debug(request, settings):
    with override_settings(DEBUG=request.param):
        yield request.param


@pytest.fixture
def route(upstream):
    return make_route(upstream.url, methods="POST", max_body_bytes=1000)


def assert_error(response, status: int, error_type: str) -> dict:
    """The gateway's own error: JSON shape, right status, request id in body and header, no HTML."""
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/json"
    assert b"<html" not in response.content.lower() and b"traceback" not in response.content.lower()
    error = response.json()["error"]
    assert set(error) == {"type", "message", "request_id"}
    assert error["type"] == error_type
    assert error["message"]
    assert error["request_id"] and error["request_id"] == response["X-Request-ID"]
    return error


def post(client, path="/v1/chat/completions", body=b'{"model": "m"}', **headers):
    return client.post(path, body, content_type="application/json", **headers)


def test_missing_key_is_401(client, route, upstream, debug):
    response = post(client)
    assert_error(response, 401, "invalid_api_key")
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert upstream.requests == []


@pytest.mark.parametrize(
    "header",
    [
        "Bearer gw_00000000_doesnotexistatall",  # well formed, unknown prefix
        "Bearer not-a-gateway-key",
        "Bearer ",
        "Basic dXNlcjpwYXNz",
    ],
)
def test_unknown_or_malformed_key_is_401(client, route, upstream, header, debug):
    assert_error(post(client, HTTP_AUTHORIZATION=header), 401, "invalid_api_key")
    assert upstream.requests == []


def test_known_prefix_with_the_wrong_secret_is_401(client, route, upstream):
    _, secret = make_key(routes=[route])
    forged = secret[:-4] + ("AAAA" if not secret.endswith("AAAA") else "BBBB")
    assert_error(post(client, **auth(forged)), 401, "invalid_api_key")
    assert upstream.requests == []


def test_expired_key_is_401(client, route, upstream, debug):
    _, secret = make_key(routes=[route], expires=timezone.now() - timedelta(seconds=1))
    error = assert_error(post(client, **auth(secret)), 401, "invalid_api_key")
    assert "expired" in error["message"]
    assert upstream.requests == []


def test_a_key_expiring_later_still_works(client, route, upstream):
    _, secret = make_key(routes=[route], expires=timezone.now() + timedelta(hours=1))
    assert post(client, **auth(secret)).status_code == 200


def test_revoked_key_is_401(client, route, upstream, debug):
    _, secret = make_key(routes=[route], revoked=timezone.now())
    error = assert_error(post(client, HTTP_X_API_KEY=secret), 401, "invalid_api_key")
    assert "revoked" in error["message"]


def test_key_revoked_after_use_is_rejected_from_then_on(client, route, upstream):
    key, secret = make_key(routes=[route])
    assert post(client, **auth(secret)).status_code == 200
    key.revoked = timezone.now()
    key.save()
    assert_error(post(client, **auth(secret)), 401, "invalid_api_key")
    assert len(upstream.requests) == 1


def test_disabled_key_is_401(client, route, upstream, debug):
    _, secret = make_key(routes=[route], enabled=False)
    error = assert_error(post(client, **auth(secret)), 401, "invalid_api_key")
    assert "disabled" in error["message"]


def test_key_not_allowed_on_the_route_is_403(client, route, upstream, debug):
    other = make_route(name="other", path_prefix="/other")
    _, secret = make_key(routes=[other])
    assert_error(post(client, **auth(secret)), 403, "permission_denied")
    assert upstream.requests == []


def test_no_route_is_404(client, route, upstream, debug):
    _, secret = make_key(all_routes=True)
    assert_error(post(client, "/v2/chat/completions", **auth(secret)), 404, "not_found")
    assert_error(client.get("/", **auth(secret)), 404, "not_found")
    assert upstream.requests == []


def test_unknown_path_without_a_key_is_401_not_a_hint_about_routes(client, route, debug):
    # Authentication comes first: a caller without a key learns nothing about which paths exist.
    assert_error(client.get("/no/such/path"), 401, "invalid_api_key")


@pytest.mark.parametrize(
    "path", ["/api/nothing-here", "/console/nothing", "/jobs/123/unknown", "/static/missing.css", "/admin-not", "/api"]
)
def test_unknown_paths_under_reserved_prefixes_are_json_404(client, path, debug):
    response = client.get(path)
    if path == "/admin-not":
        # Not reserved (only /admin/ is): it goes to the proxy, which wants a key first.
        assert_error(response, 401, "invalid_api_key")
    else:
        assert_error(response, 404, "not_found")


def test_wrong_method_is_405_with_allow(client, route, upstream, debug):
    make_route(name="also-here", path_prefix="/v1/chat", methods="PUT")
    _, secret = make_key(all_routes=True)
    response = client.get("/v1/chat/completions", **auth(secret))
    assert_error(response, 405, "method_not_allowed")
    assert response["Allow"] == "POST, PUT"
    assert upstream.requests == []


def test_body_over_the_routes_limit_is_413_and_the_upstream_hears_nothing(client, route, upstream, debug):
    _, secret = make_key(routes=[route])
    response = post(client, body=b"x" * 1001, **auth(secret))
    assert_error(response, 413, "request_too_large")
    assert upstream.requests == []


def test_body_exactly_at_the_limit_is_forwarded(client, route, upstream):
    _, secret = make_key(routes=[route])
    assert post(client, body=b"y" * 1000, **auth(secret)).status_code == 200
    assert upstream.last.body == b"y" * 1000


def test_unreachable_upstream_is_502(client, debug):
    route = make_route(f"http://127.0.0.1:{free_port()}", name="closed-port")  # nothing listens there
    _, secret = make_key(routes=[route])
    error = assert_error(client.get("/v1/models", **auth(secret)), 502, "upstream_unavailable")
    # The route's name, which callers may know; never the target's internal address.
    assert "closed-port" in error["message"] and "127.0.0.1" not in error["message"]


def test_slow_upstream_is_504(client, upstream, debug):
    release = threading.Event()
    upstream.reply = lambda handler: release.wait(5)  # never answers until the test is over
    route = make_route(name="slow", read_timeout=0.3)
    make_target(route, upstream.url)
    _, secret = make_key(routes=[route])
    try:
        assert_error(client.get("/v1/models", **auth(secret)), 504, "upstream_timeout")
    finally:
        release.set()


def test_invalid_json_on_a_model_route_is_400(client, upstream):
    route = make_route(upstream.url, name="models-only", model_names="gpt-x")
    _, secret = make_key(routes=[route])
    assert_error(post(client, body=b"{not json", **auth(secret)), 400, "invalid_request_error")
    assert upstream.requests == []


def test_errors_ignore_the_clients_accept_header(client, route, debug):
    response = post(client, HTTP_ACCEPT="text/html")
    assert_error(response, 401, "invalid_api_key")


@pytest.mark.parametrize("path", ["/api/x", "/v1/models"])
def test_errors_are_json_when_the_client_accepts_only_event_streams(client, route, path):
    assert client.get(path, HTTP_ACCEPT="text/event-stream")["Content-Type"] == "application/json"


def test_a_host_the_gateway_does_not_serve_is_a_json_400(client, route):
    response = client.get("/v1/models", HTTP_HOST="evil.example.com")
    assert_error(response, 400, "invalid_request_error")
