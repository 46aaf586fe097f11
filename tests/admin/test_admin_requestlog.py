"""The admin's request-log list filters through the log's one FilterSet: no query over the whole
log for filter choices or dates (no SELECT DISTINCT, no date hierarchy), the request id searched
on its index, and a link to the console's explorer."""

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from routes_admin.models import ErrorType, RequestLog
from tests.factories import make_route

pytestmark = pytest.mark.django_db
LIST = "/admin/routes_admin/requestlog/"


def log_row(**fields) -> RequestLog:
    values = dict(request_id="r", method="POST", path="/v1/chat/completions", status=200, latency_ms=10.0)
    values.update(fields)
    return RequestLog.objects.create(**values)


def shown(response) -> list[str]:
    return sorted(row.request_id for row in response.context["cl"].result_list)


def test_the_list_asks_nothing_of_the_whole_log_for_its_filters(admin_client):
    make_route(name="chat")
    log_row(request_id="a", route_name="chat", error_type=ErrorType.UPSTREAM_TIMEOUT, status=504)
    with CaptureQueriesContext(connection) as queries:
        response = admin_client.get(LIST)
    assert response.status_code == 200 and shown(response) == ["a"]
    sql = [query["sql"].upper() for query in queries.captured_queries]
    assert not [query for query in sql if "DISTINCT" in query], sql  # no list filter reads the log's values
    counts = [query for query in sql if "COUNT(" in query]
    assert counts and all("LIMIT" in query for query in counts), counts  # the page links count up to a bound
    assert 'id="explore-in-console"' in response.content.decode()
    for value in ErrorType.values:  # the filter offers every error type, from the one list
        assert f"?error_type={value}" in response.content.decode()


def test_each_list_filter_and_the_search_find_their_calls(admin_client):
    chat = make_route(name="chat")
    now = timezone.now()
    log_row(request_id="ok", route=chat, route_name="chat")
    log_row(request_id="cut", status=502, error_type=ErrorType.UPSTREAM_STREAM_ERROR)
    log_row(request_id="refused", status=429, error_type=ErrorType.RATE_LIMIT_EXCEEDED)
    log_row(request_id="old", status=503, error_type=ErrorType.SERVICE_UNAVAILABLE, created=now - timedelta(days=3))
    cases = {
        "status=5xx": ["cut", "old"],
        "status=429": ["refused"],
        "error_type=upstream_stream_error": ["cut"],
        "route_name=chat": ["ok"],
        "within=24h": ["cut", "ok", "refused"],
        "within=7d&status=5xx": ["cut", "old"],
        "q=refused": ["refused"],
        "q=efuse": [],  # the request id, exactly (its index), not a scan for a part of it
    }
    for query, expected in cases.items():
        response = admin_client.get(f"{LIST}?{query}")
        assert response.status_code == 200, query
        assert shown(response) == expected, query


def test_the_pages_reach_a_bounded_number_of_the_newest_calls(admin_client, monkeypatch):
    from routes_admin import admin_requestlog

    monkeypatch.setattr(admin_requestlog, "PAGED_CALLS", 120)
    RequestLog.objects.bulk_create(
        RequestLog(request_id=f"c{i}", method="GET", path="/v1", status=200, latency_ms=1) for i in range(130)
    )
    response = admin_client.get(LIST)
    assert response.context["cl"].result_count == 120 and len(response.context["cl"].result_list) == 50
    assert 'id="paged-calls"' in response.content.decode()
    assert admin_client.get(f"{LIST}?p=3").status_code == 200  # rows 101-120
    assert admin_client.get(f"{LIST}?p=4").status_code == 302  # past the bound: the admin's "bad page"


def test_a_filter_value_that_does_not_parse_is_reported_not_a_500(admin_client):
    log_row()
    response = admin_client.get(f"{LIST}?status=abc")
    assert response.status_code == 302 and response["Location"].endswith("?e=1")  # the admin's "bad filter"
