"""Routing by what a request is and what it contains, and model aliases per target."""

import json

import pytest

from routes_admin.models import RequestLog
from tests.factories import auth, make_key, make_route, make_target
from tests.upstream import json_reply

pytestmark = pytest.mark.django_db


def routed(servers, **routes):
    """One upstream per named route, answering with the route's name; returns a key for them all."""
    made = {}
    for name, fields in routes.items():
        server = servers(json_reply({"route": name}))
        made[name] = make_route(server.url, name=name, **fields)
    _, secret = make_key(all_routes=True)
    return secret


def served_by(response) -> str:
    assert response.status_code == 200, response.content if not response.streaming else ""
    return json.loads(b"".join(response.streaming_content))["route"]


def post(client, secret, path="/v1/chat/completions", body=None, **headers):
    data = json.dumps(body if body is not None else {"model": "m"})
    return client.post(path, data, content_type="application/json", **auth(secret), **headers)


def test_method_selects_the_route(client, servers):
    secret = routed(
        servers, reads={"path_prefix": "/v1", "methods": "GET"}, writes={"path_prefix": "/v1", "methods": "POST"}
    )

    assert served_by(client.get("/v1/models", **auth(secret))) == "reads"
    assert served_by(post(client, secret)) == "writes"
    response = client.delete("/v1/models", **auth(secret))
    assert response.status_code == 405
    assert response["Allow"] == "GET, POST"


def test_longest_path_prefix_wins_and_prefixes_match_whole_segments(client, servers):
    secret = routed(servers, general={"path_prefix": "/v1"}, embeddings={"path_prefix": "/v1/embeddings"})

    assert served_by(post(client, secret, "/v1/embeddings")) == "embeddings"
    assert served_by(post(client, secret, "/v1/embeddings/batch")) == "embeddings"
    assert served_by(post(client, secret, "/v1/embeddings-legacy")) == "general"
    assert post(client, secret, "/v10/chat").status_code == 404


def test_header_conditions_select_the_route(client, servers):
    secret = routed(
        servers,
        acme={"path_prefix": "/v1", "match_headers": {"X-Tenant": "acme"}, "priority": 10},
        beta={"path_prefix": "/v1", "match_headers": {"X-Beta": "*"}, "priority": 5},
        everyone={"path_prefix": "/v1"},
    )

    assert served_by(post(client, secret, HTTP_X_TENANT="acme")) == "acme"
    assert served_by(post(client, secret, HTTP_X_TENANT="other")) == "everyone"
    assert served_by(post(client, secret, HTTP_X_BETA="anything")) == "beta"
    assert served_by(post(client, secret)) == "everyone"


def test_body_fields_select_the_route_with_dotted_paths(client, servers):
    secret = routed(
        servers,
        streaming={"path_prefix": "/v1", "match_body": {"stream": True}, "priority": 1},
        gold={"path_prefix": "/v1", "match_body": {"metadata.tier": "gold"}, "priority": 2},
        default={"path_prefix": "/v1"},
    )

    assert served_by(post(client, secret, body={"model": "m", "stream": True})) == "streaming"
    assert served_by(post(client, secret, body={"model": "m", "stream": False})) == "default"
    assert served_by(post(client, secret, body={"model": "m", "metadata": {"tier": "gold"}})) == "gold"
    assert served_by(post(client, secret, body={"model": "m", "metadata": "gold"})) == "default"


def test_model_in_the_body_selects_the_route(client, servers):
    secret = routed(
        servers,
        openai={"path_prefix": "/v1", "model_names": "gpt-4o, gpt-4o-mini"},
        llama={"path_prefix": "/v1", "model_names": "llama-3.1-8b-instruct\nllama-3.1-70b-instruct"},
    )

    assert served_by(post(client, secret, body={"model": "gpt-4o-mini"})) == "openai"
    assert served_by(post(client, secret, body={"model": "llama-3.1-70b-instruct"})) == "llama"
    response = post(client, secret, body={"model": "claude"})
    assert response.status_code == 404
    assert "claude" in response.json()["error"]["message"]


def test_priority_settles_routes_that_both_match(client, servers):
    secret = routed(
        servers,
        low={"path_prefix": "/v1", "model_names": "fast", "priority": 1},
        high={"path_prefix": "/v1", "match_headers": {"X-Team": "ml"}, "priority": 9},
    )

    assert served_by(post(client, secret, body={"model": "fast"}, HTTP_X_TEAM="ml")) == "high"
    assert served_by(post(client, secret, body={"model": "fast"})) == "low"


def test_body_that_is_not_json_is_refused_when_a_route_needs_its_content(client, servers):
    secret = routed(servers, models={"path_prefix": "/v1", "model_names": "gpt-4o"})

    response = client.post("/v1/chat/completions", b"{not json", content_type="application/json", **auth(secret))

    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert RequestLog.objects.get().status == 400


def test_public_model_name_is_rewritten_to_each_targets_own_name(client, servers):
    local, hosted = servers(), servers()
    route = make_route(name="fast", path_prefix="/v1", model_names="fast", strategy="weighted")
    make_target(route, local.url, name="local", model_aliases={"fast": "llama-3.1-8b-instruct"})
    make_target(route, hosted.url, name="hosted", model_aliases={"fast": "gpt-4o-mini"})
    _, secret = make_key(routes=[route])
    body = {"model": "fast", "messages": [{"role": "user", "content": "hi"}], "temperature": 0.2}

    for _ in range(2):  # weights 1:1 take one call to each
        b"".join(post(client, secret, body=body).streaming_content)

    assert [r.json()["model"] for r in local.requests] == ["llama-3.1-8b-instruct"]
    assert [r.json()["model"] for r in hosted.requests] == ["gpt-4o-mini"]
    for received in local.requests + hosted.requests:
        assert received.json()["messages"] == body["messages"]
        assert received.json()["temperature"] == 0.2


def test_model_without_an_alias_is_sent_unchanged(client, upstream):
    route = make_route(path_prefix="/v1")
    make_target(route, upstream.url, model_aliases={"fast": "llama-3.1-8b-instruct"})
    _, secret = make_key(routes=[route])
    raw = b'{"model":  "gpt-4o", "x": 1}'

    response = client.post("/v1/chat/completions", raw, content_type="application/json", **auth(secret))

    assert response.status_code == 200
    b"".join(response.streaming_content)
    assert upstream.last.body == raw  # byte for byte: nothing to rewrite
