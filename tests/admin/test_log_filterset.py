"""The request log's one FilterSet: the console's explorer and the API's log list find the same
calls for the same filters, and a filter value that does not parse is refused, never ignored."""

import re
from datetime import timedelta
from urllib.parse import urlencode

import pytest
from django.contrib.auth.models import Group, User
from django.utils import timezone

from routes_admin.models import ErrorType, RequestLog
from tests.factories import make_key, make_route
from tests.roles import bearer, token_for

pytestmark = pytest.mark.django_db


def log_row(**fields) -> RequestLog:
    values = dict(request_id="r", method="POST", path="/v1/chat/completions", status=200, latency_ms=10.0)
    values.update(fields)
    return RequestLog.objects.create(**values)


@pytest.fixture
def console(client):
    user = User.objects.create_user("auditor", password="pw", is_staff=True)
    user.groups.add(Group.objects.get(name="Auditor"))
    client.force_login(user)
    return client


@pytest.fixture
def calls():
    alice, _ = make_key(name="alice", owner="team red")
    bob, _ = make_key(name="bob", owner="team blue")
    chat = make_route(name="chat")
    now = timezone.now()
    log_row(request_id="ok", api_key=alice, key_prefix=alice.prefix, route=chat, route_name="chat", model="m1")
    log_row(request_id="slow", api_key=bob, key_prefix=bob.prefix, model="m2", latency_ms=4000, method="GET")
    log_row(request_id="refused", api_key=bob, status=429, error_type="rate_limit_exceeded", limit="tokens_per_day")
    log_row(request_id="cut", status=502, error_type=ErrorType.UPSTREAM_STREAM_ERROR, created=now - timedelta(hours=1))
    log_row(request_id="old", status=503, error_type="upstream_unavailable", created=now - timedelta(days=3))
    return {"alice": alice, "bob": bob, "chat": chat, "now": now}


def from_console(console, query: dict) -> list[str]:
    response = console.get("/console/calls/", query)
    assert response.status_code == 200, response.content
    return sorted(row.request_id for row in response.context["rows"])


def from_api(client, query: dict) -> list[str]:
    response = client.get(f"/api/logs/?{urlencode(query)}", **bearer(token_for("auditor")))
    assert response.status_code == 200, response.content
    return sorted(row["request_id"] for row in response.json()["results"])


def test_the_console_and_the_api_find_the_same_calls_for_the_same_filters(console, calls):
    two_days_ago = (calls["now"] - timedelta(days=2)).isoformat()
    cases = [
        ({"key": "team blue"}, ["refused", "slow"]),
        ({"key": f"gw_{calls['alice'].prefix}_…"}, ["ok"]),
        ({"api_key": calls["bob"].pk}, ["refused", "slow"]),
        ({"key_prefix": calls["alice"].prefix}, ["ok"]),
        ({"route_name": "chat"}, ["ok"]),
        ({"route": calls["chat"].pk}, ["ok"]),
        ({"model": "m2"}, ["slow"]),
        ({"status": "5xx"}, ["cut", "old"]),
        ({"status": "429"}, ["refused"]),
        ({"status_min": 500}, ["cut", "old"]),
        ({"status_min": 400, "status_max": 499}, ["refused"]),
        ({"min_latency": 1000}, ["slow"]),
        ({"request_id": "refused"}, ["refused"]),
        ({"error_type": "upstream_stream_error"}, ["cut"]),
        ({"limit": "tokens_per_day"}, ["refused"]),
        ({"method": "GET"}, ["slow"]),
        ({"created_before": two_days_ago}, ["old"]),
        ({"created_after": two_days_ago, "status": "5xx"}, ["cut"]),
    ]
    for query, expected in cases:
        assert from_console(console, query) == expected, query
        assert from_api(console, query) == expected, query


def test_a_prefix_or_route_name_no_key_or_route_has_now_is_found_as_logged(console, calls):
    log_row(request_id="gone", key_prefix="deadbeef", route_name="removed")
    assert from_api(console, {"key_prefix": "deadbeef"}) == ["gone"]
    assert from_console(console, {"route_name": "removed"}) == ["gone"]


INVALID = [
    {"status": "abc"},
    {"status": "0.5"},
    {"status": "200.0"},
    {"status_min": "4e2"},
    {"status_min": "99999999999999999999999"},
    {"created_after": "yesterday"},
    {"created_after": "2026-13-01T00:00:00Z"},
    {"created_after": "2026-01-02T00:00:00Z", "created_before": "2026-01-01T00:00:00Z"},
    {"min_latency": "-1"},
    {"min_latency": "nan"},
    {"error_type": "no_such_error"},
    {"api_key": "alice"},
    {"route": "chat"},
]
REPEATED = [
    "status=200&status=500",
    "error_type=not_found&error_type=conflict",
    "created_after=2026-01-01&created_after=2026-02-01",
]


@pytest.mark.parametrize("query", [urlencode(query) for query in INVALID] + REPEATED)
def test_an_invalid_or_repeated_filter_on_the_log_list_is_a_json_400(client, query):
    log_row(request_id="any")
    response = client.get(f"/api/logs/?{query}", **bearer(token_for("auditor")))
    assert response.status_code == 400, (query, response.status_code, response.content)
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["fields"], error


@pytest.mark.parametrize("query", [urlencode(query) for query in INVALID] + REPEATED)
def test_an_invalid_or_repeated_filter_in_the_explorer_is_explained(console, query):
    log_row(request_id="any")
    response = console.get(f"/console/calls/?{query}")
    assert response.status_code == 400
    assert response.context["rows"] == [] and response.context["form"].errors
    assert console.get(f"/console/calls/export.csv?{query}").status_code == 400


def test_the_explorer_offers_every_error_type_and_no_other(console):
    html = console.get("/console/calls/").content.decode()
    select = re.search(r'<select name="error_type".*?</select>', html, re.S)
    assert select, "the error type is chosen from a list"
    offered = re.findall(r'<option value="([^"]*)"', select.group(0))
    assert offered == ["", *ErrorType.values]
