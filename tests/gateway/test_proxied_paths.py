"""Proxied calls skip the browser pages' middleware and the URL table, and lose nothing by it:
the same paths reach the proxy, and the answers carry the same security headers as before."""

import pytest
from django.urls import resolve

from gateway_project.urls import PROXIED
from tests.factories import auth, make_key, make_route

pytestmark = pytest.mark.django_db

PATHS = [
    "/",
    "/v1",
    "/v1/chat/completions",
    "/v1/admin/x",
    "/administrator",
    "/admin",
    "/admin/",
    "/admin/routes_admin/route/",
    "/api",
    "/api/v1/routes",
    "/apis",
    "/console/",
    "/consoles",
    "/jobs/abc",
    "/jobsx",
    "/static/admin/css/base.css",
    "/healthz",
    "/healthz/x",
    "/readyz",
    "/metrics",
    "/metrics2",
    "/%2e%2e/admin/",
    "/v1/%2Fadmin",
    "//admin/",
]


@pytest.mark.parametrize("path", PATHS)
def test_the_middleware_sends_to_the_proxy_exactly_the_paths_the_url_table_sends_there(path):
    assert bool(PROXIED.match(path[1:])) == (resolve(path).url_name == "proxy")


def test_a_proxied_answer_keeps_the_security_headers_and_its_length_and_gets_no_session_or_csrf_cookie(
    client, upstream
):
    route = make_route(upstream.url)
    _, secret = make_key(routes=[route])
    for headers in ({}, auth(secret)):  # refused by the pipeline (401), then answered by the upstream
        response = client.post("/v1/chat/completions", b"{}", content_type="application/json", **headers)
        assert response.status_code in (200, 401)
        assert response["X-Frame-Options"] == "DENY"
        assert response["X-Content-Type-Options"] == "nosniff"
        assert response["Referrer-Policy"] == "same-origin"
        assert response["X-Request-ID"]
        assert not response.cookies
        assert "Cookie" not in response.get("Vary", "")
        if not response.streaming:  # an error: its length is said, so the connection stays usable
            assert response["Content-Length"] == str(len(response.content))


def test_browser_pages_still_get_their_middleware(client):
    response = client.get("/admin/login/")
    assert response.status_code == 200
    assert "csrftoken" in response.cookies
    assert response["X-Frame-Options"] == "DENY"
