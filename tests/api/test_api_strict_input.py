"""The management API refuses input its schema does not allow, with the JSON 400 naming the field,
instead of guessing (a filter it cannot read ignored, a number taken as a name), and its schema
states the rules the API enforces."""

import pytest
from django.test import Client

from tests.factories import make_plan, make_route
from tests.roles import bearer, token_for

pytestmark = pytest.mark.django_db


@pytest.fixture
def api(client: Client):
    headers = bearer(token_for("admin"))

    class Calls:
        def get(self, path):
            return client.get(path, **headers)

        def post(self, path, body):
            return client.post(path, body, content_type="application/json", **headers)

        def patch(self, path, body):
            return client.patch(path, body, content_type="application/json", **headers)

    return Calls()


def refused(answer, field: str) -> None:
    assert answer.status_code == 400, answer.content
    error = answer.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert field in error["fields"], error


@pytest.mark.parametrize(
    "query, field",
    [
        ("revoked=maybe", "revoked"),
        ("revoked=1", "revoked"),
        ("enabled=yes", "enabled"),
        ("all_routes=", None),  # empty: no filter, like a missing one
        ("name=a&name=b", "name"),
        ("routes=0.5", "routes"),
        ("quota_plan=99999999999999999999", "quota_plan"),
        ("page_size=ten", "page_size"),
        ("page_size=0", "page_size"),
        ("page_size=501", "page_size"),
        ("page_size=5&page_size=6", "page_size"),
    ],
)
def test_a_key_list_filter_it_cannot_read_is_a_400(api, query, field):
    answer = api.get(f"/api/keys/?{query}")
    if field is None:
        assert answer.status_code == 200
    else:
        refused(answer, field)


def test_the_other_lists_refuse_invalid_filters_too(api):
    refused(api.get("/api/routes/?enabled=maybe"), "enabled")
    refused(api.get("/api/routes/?strategy=fastest"), "strategy")
    refused(api.get("/api/plans/?name=a&name=b"), "name")
    refused(api.get("/api/history/?actor=x"), "actor")
    refused(api.get("/api/history/?page_size=2000"), "page_size")


def test_valid_filters_still_filter(api):
    plan = make_plan(name="gold")
    make_plan(name="silver")
    assert [p["id"] for p in api.get("/api/plans/?name=gol&page_size=500").json()["results"]] == [plan.id]
    assert api.get("/api/keys/?revoked=false&enabled=true").status_code == 200


@pytest.mark.parametrize(
    "body, field",
    [
        ({"name": 0}, "name"),
        ({"name": "p", "requests_per_minute": "60"}, "requests_per_minute"),
        ({"name": "p", "requests_per_minute": 1.5}, "requests_per_minute"),
        ({"name": "p", "requests_per_minute": True}, "requests_per_minute"),
        ({"name": "p", "requests_per_minute": -1}, "requests_per_minute"),
    ],
)
def test_a_plan_field_of_the_wrong_type_is_refused(api, body, field):
    refused(api.post("/api/plans/", body), field)


def test_a_whole_float_is_a_whole_number(api):
    assert api.post("/api/plans/", {"name": "p", "requests_per_minute": 60.0}).status_code == 201


@pytest.mark.parametrize(
    "fields, field",
    [
        ({"match_headers": None}, "match_headers"),
        ({"match_headers": []}, "match_headers"),
        ({"match_headers": {"X-Tenant": 1}}, "match_headers"),
        ({"match_body": "stream"}, "match_body"),
        ({"enabled": "yes"}, "enabled"),
        ({"priority": "1"}, "priority"),
        ({"read_timeout": "60"}, "read_timeout"),
        ({"quota_plan": "1"}, "quota_plan"),
        ({"path_prefix": "v1"}, "path_prefix"),
        ({"path_prefix": "/api/x"}, "path_prefix"),
        ({"retry_statuses": "502,abc"}, "retry_statuses"),
        ({"targets": [{"url": "http://127.0.0.1:9/v1", "weight": "5"}]}, "targets"),
        ({"targets": [{"url": "http://127.0.0.1:9/v1", "model_aliases": {"a": 1}}]}, "targets"),
    ],
)
def test_a_route_field_of_the_wrong_type_or_shape_is_refused(api, fields, field):
    refused(api.post("/api/routes/", {"name": "r", "path_prefix": "/v1", **fields}), field)


def test_a_key_field_of_the_wrong_type_is_refused(api):
    route = make_route()
    refused(api.post("/api/keys/", {"name": "k", "routes": [str(route.id)]}), "routes")
    refused(api.post("/api/keys/", {"name": "k", "all_routes": "true"}), "all_routes")
    refused(api.post("/api/keys/", {"name": 7, "all_routes": True}), "name")
    assert api.post("/api/keys/", {"name": "k", "routes": [route.id]}).status_code == 201


def test_the_schema_states_the_rules(api):
    schema = api.get("/api/schema/?format=json").json()
    components = schema["components"]["schemas"]
    assert components["KeyRequest"]["anyOf"]  # routes, or all_routes
    route = components["RouteRequest"]["properties"]
    assert route["match_headers"]["type"] == "object"
    assert route["match_headers"]["additionalProperties"] == {"type": "string"}
    assert route["path_prefix"]["pattern"].startswith("^/(?!")
    assert "pattern" in route["name"]  # no NUL character
    keys = {p["name"]: p["schema"] for p in schema["paths"]["/api/keys/"]["get"]["parameters"]}
    assert keys["revoked"] == {"type": "boolean"}
    assert keys["page_size"]["minimum"] == 1 and keys["page_size"]["maximum"] == 500
    assert keys["routes"]["maximum"] == 2**63 - 1
