"""Which route serves a call."""

import json

import pytest

from tests.factories import auth, make_key, make_route, make_target

pytestmark = pytest.mark.django_db


@pytest.fixture
def upstreams(upstream):
    """One real upstream; each route's target URL ends in the route's letter, so the path it
    receives says which route was chosen."""
    upstream.reply = lambda h: h.send_json(200, {"upstream": h.received.path.split("/")[1]})
    return upstream


def route_to(upstream, name: str, **fields):
    route = make_route(name=fields.pop("route_name", f"to-{name}-{fields.get('path_prefix', '')}"), **fields)
    make_target(route, f"{upstream.url}/{name}")
    return route


@pytest.fixture
def secret():
    return make_key(all_routes=True)[1]


def who(client, secret, path, method="GET", body=b"") -> tuple[int, str]:
    response = client.generic(method, path, body, content_type="application/json", **auth(secret))
    if response.streaming:
        return response.status_code, json.loads(b"".join(response.streaming_content))["upstream"]
    return response.status_code, response.json()["error"]["type"]


def test_the_longest_matching_prefix_wins(client, upstreams, secret):
    route_to(upstreams, "a", path_prefix="/v1")
    route_to(upstreams, "b", path_prefix="/v1/chat")
    route_to(upstreams, "c", path_prefix="/v1/chat/completions")
    assert who(client, secret, "/v1/models") == (200, "a")
    assert who(client, secret, "/v1/chat") == (200, "b")
    assert who(client, secret, "/v1/chat/other") == (200, "b")
    assert who(client, secret, "/v1/chat/completions") == (200, "c")
    assert who(client, secret, "/v1/chat/completions/x") == (200, "c")
    assert upstreams.requests[2].path == "/b/other"  # the rest after the winning prefix


def test_a_prefix_matches_whole_segments_only(client, upstreams, secret):
    route_to(upstreams, "a", path_prefix="/v1")
    assert who(client, secret, "/v10/models") == (404, "not_found")
    assert who(client, secret, "/v1x") == (404, "not_found")
    assert who(client, secret, "/v1") == (200, "a")


def test_a_trailing_slash_in_the_prefix_is_ignored(client, upstreams, secret):
    route_to(upstreams, "a", path_prefix="/v1/")
    assert who(client, secret, "/v1/models") == (200, "a")
    assert upstreams.last.path == "/a/models"


def test_a_root_prefix_catches_everything_else(client, upstreams, secret):
    route_to(upstreams, "a", path_prefix="/")
    route_to(upstreams, "b", path_prefix="/v1")
    assert who(client, secret, "/anything/else") == (200, "a")
    assert who(client, secret, "/v1/x") == (200, "b")


def test_methods_choose_between_routes_on_the_same_prefix(client, upstreams, secret):
    route_to(upstreams, "a", path_prefix="/v1", methods="GET")
    route_to(upstreams, "b", path_prefix="/v1", methods="POST,PUT")
    assert who(client, secret, "/v1/x") == (200, "a")
    assert who(client, secret, "/v1/x", "POST", b"{}") == (200, "b")
    assert who(client, secret, "/v1/x", "put", b"{}") == (200, "b")


def test_a_longer_prefix_of_another_method_does_not_hide_a_shorter_one(client, upstreams, secret):
    route_to(upstreams, "a", path_prefix="/v1", methods="GET,POST")
    route_to(upstreams, "b", path_prefix="/v1/chat", methods="POST")
    assert who(client, secret, "/v1/chat/x", "GET") == (200, "a")
    assert who(client, secret, "/v1/chat/x", "POST", b"{}") == (200, "b")


def test_an_empty_method_list_allows_every_method(client, upstreams, secret):
    route_to(upstreams, "a", path_prefix="/v1", methods="")
    for method in ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"):
        assert who(client, secret, "/v1/x", method, b"") == (200, "a"), method


def test_only_other_methods_match_gives_405_listing_them(client, upstreams, secret):
    route_to(upstreams, "a", path_prefix="/v1", methods="POST")
    route_to(upstreams, "b", path_prefix="/v1/chat", methods="PUT, PATCH")
    response = client.delete("/v1/chat/x", **auth(secret))
    assert response.status_code == 405
    assert response["Allow"] == "PATCH, POST, PUT"


def test_the_model_list_chooses_the_route(client, upstreams, secret):
    route_to(upstreams, "a", path_prefix="/v1", model_names="gpt-4o, gpt-4o-mini")
    route_to(upstreams, "b", path_prefix="/v1", model_names="llama-3\nmistral-7b")
    route_to(upstreams, "c", path_prefix="/v1")  # no list: any model, and bodies without one
    assert who(client, secret, "/v1/chat", "POST", b'{"model": "gpt-4o-mini"}') == (200, "a")
    assert who(client, secret, "/v1/chat", "POST", b'{"model": "mistral-7b"}') == (200, "b")
    assert who(client, secret, "/v1/chat", "POST", b'{"model": "other"}') == (200, "c")
    assert who(client, secret, "/v1/files") == (200, "c")
    assert upstreams.requests[0].json() == {"model": "gpt-4o-mini"}  # the body is still forwarded whole


def test_an_unknown_model_with_only_model_routes_is_404(client, upstreams, secret):
    route_to(upstreams, "a", path_prefix="/v1", model_names="gpt-4o")
    status, error_type = who(client, secret, "/v1/chat", "POST", b'{"model": "gpt-5"}')
    assert (status, error_type) == (404, "not_found")
    assert who(client, secret, "/v1/chat", "POST", b'{"messages": []}') == (404, "not_found")
    assert upstreams.requests == []


def test_a_longer_prefix_whose_model_list_does_not_match_falls_back_to_a_shorter_one(client, upstreams, secret):
    route_to(upstreams, "a", path_prefix="/v1")
    route_to(upstreams, "b", path_prefix="/v1/chat", model_names="special")
    assert who(client, secret, "/v1/chat/x", "POST", b'{"model": "special"}') == (200, "b")
    assert who(client, secret, "/v1/chat/x", "POST", b'{"model": "plain"}') == (200, "a")


def test_disabled_routes_are_ignored(client, upstreams, secret):
    route_to(upstreams, "a", path_prefix="/v1")
    route_to(upstreams, "b", path_prefix="/v1/chat", enabled=False)
    route_to(upstreams, "c", path_prefix="/v2", enabled=False)
    assert who(client, secret, "/v1/chat/x") == (200, "a")
    assert who(client, secret, "/v2/x") == (404, "not_found")


def test_disabling_a_route_takes_effect_on_the_next_call(client, upstreams, secret):
    route = route_to(upstreams, "a", path_prefix="/v1")
    assert who(client, secret, "/v1/x") == (200, "a")
    route.enabled = False
    route.save()
    assert who(client, secret, "/v1/x") == (404, "not_found")


@pytest.mark.parametrize("path", ["/admin/", "/healthz", "/readyz", "/metrics"])
def test_reserved_paths_never_reach_a_catch_all_route(client, upstreams, secret, path):
    route_to(upstreams, "a", path_prefix="/")
    client.get(path, **auth(secret))
    assert upstreams.requests == []


def test_reserved_prefixes_cannot_be_saved_as_routes():
    from django.core.exceptions import ValidationError

    from routes_admin.models import Route

    for prefix in ("/admin", "/admin/x", "/api", "/static/", "/healthz", "/jobs/a", "/console"):
        with pytest.raises(ValidationError):
            Route(name="r", path_prefix=prefix).full_clean()
    Route(name="r", path_prefix="/administration").full_clean()  # only whole segments are reserved
