"""Route configuration that cannot work is refused in the one write path (services/routes.py),
whatever the surface; at equal prefix and priority the route with more conditions is tried first."""

import json

import pytest

from routes_admin.services import ServiceError
from routes_admin.services import routes as route_service
from tests.factories import auth, make_key, make_route, make_user
from tests.upstream import json_reply

pytestmark = pytest.mark.django_db


def fields(**overrides) -> dict:
    return {"name": "chat", "path_prefix": "/v1", "methods": "GET,POST", **overrides}


@pytest.mark.parametrize("methods", ["GET POST", "PO(ST", "GET,<script>", "GÉT"])
def test_methods_that_are_not_http_method_tokens_are_refused(methods):
    with pytest.raises(ServiceError) as refused:
        route_service.save_route(None, fields(methods=methods))
    assert "methods" in refused.value.errors


@pytest.mark.parametrize("name", ["chat\nroute", "chat\x1b[31m", "tab\there"])
def test_names_with_control_characters_are_refused(name):
    with pytest.raises(ServiceError) as refused:
        route_service.save_route(None, fields(name=name))
    assert "name" in refused.value.errors


def test_usual_methods_and_names_are_accepted():
    saved = route_service.save_route(None, fields(name="chat · eu", methods="get, POST,PURGE"))
    assert saved.route.method_list == ["GET", "POST", "PURGE"]


def test_the_api_and_the_admin_refuse_them_too(client):
    client.force_login(make_user("ops", role="Operator"))
    answer = client.post("/api/routes/", json.dumps(fields(methods="GET POST")), content_type="application/json")
    assert answer.status_code == 400 and "methods" in json.dumps(answer.json())


def test_at_equal_prefix_and_priority_the_route_with_more_conditions_wins(client, upstream, servers):
    other = servers(json_reply({"from": "specific"}))
    upstream.reply = json_reply({"from": "catch-all"})
    # Named so that the name order (the old tie-break) would try the catch-all first.
    general = make_route(upstream.url, name="a-catch-all", path_prefix="/v1")
    specific = make_route(other.url, name="b-tenant", path_prefix="/v1", match_headers={"X-Tenant": "acme"})
    _, secret = make_key(routes=[general, specific])
    send = dict(content_type="application/json", **auth(secret))
    tenant = client.post("/v1/chat/completions", b"{}", HTTP_X_TENANT="acme", **send)
    anyone = client.post("/v1/chat/completions", b"{}", **send)
    assert json.loads(b"".join(tenant.streaming_content) if tenant.streaming else tenant.content) == {
        "from": "specific"
    }
    assert json.loads(b"".join(anyone.streaming_content) if anyone.streaming else anyone.content) == {
        "from": "catch-all"
    }
