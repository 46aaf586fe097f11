"""Every filter of the request log's one FilterSet (the console's explorer and the API's log list)
is served by an index, never a plain scan of the log."""

import pytest
from django.db import connection, transaction

from console import filters
from routes_admin.filtersets import RequestLogFilterSet
from routes_admin.models import RequestLog
from tests.factories import make_key, make_route

pytestmark = pytest.mark.django_db

CASES = {
    # A key or route filter may also use the foreign key's own index (PostgreSQL does, depending on
    # the statistics earlier tests left): an index either way.
    "key": ("key", "alice", "log_key_created_idx|requestlog_api_key_id_"),
    "route name": ("route_name", "chat", "log_route_created_idx|requestlog_route_id_"),
    "part of a route name": ("route_contains", "CH", "log_route_created_idx|requestlog_route_id_"),
    # No index holds part of a name: newest first on the time index, bounded by the time range.
    "part of a model name": ("model_contains", "m1", "log_created_idx"),
    "key prefix": ("key_prefix", "PREFIX", "log_key_created_idx|requestlog_api_key_id_"),
    "status from 500": ("status_min", "500", "log_error_status_idx|log_errors_idx"),  # either partial index
    "model": ("model", "m1", "log_model_created_idx"),
    "status": ("status", "429", "log_error_status_idx"),
    "status class": ("status", "5xx", "log_error_status_idx"),
    "min latency": ("min_latency", "2000", "log_slow_idx"),
    "request id": ("request_id", "abc", "log_request_id_idx"),
    "error type": ("error_type", "upstream_timeout", "log_error_type_idx"),
    "limit": ("limit", "requests_per_minute", "log_limit_idx"),
    "team": ("team", "red", "log_team_idx"),
    "min cost": ("min_cost", "0.5", "log_cost_idx"),
    "method": ("method", "GET", "log_method_idx"),
}


def plan(rows) -> str:
    query = rows.order_by("-created", "-id")[: filters.PAGE_SIZE + 1]
    if connection.vendor != "postgresql":
        return query.explain()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            "SET LOCAL enable_seqscan = off"
        )  # a tiny table: ask for the index PostgreSQL would use at scale
        return query.explain()


def filtered(query: dict):
    found = RequestLogFilterSet(query, queryset=RequestLog.objects.order_by())
    assert found.is_valid(), found.errors
    return found.qs


@pytest.mark.parametrize("case", CASES)
def test_each_filter_uses_its_index(case):
    field, value, index = CASES[case]
    key, _ = make_key(name="alice")
    make_route(name="chat")
    explained = plan(filtered({field: value.replace("PREFIX", key.prefix)}))
    assert any(name in explained for name in index.split("|")), explained


def test_a_time_range_uses_the_time_index():
    explained = plan(filtered({"created_after": "2026-01-01T00:00", "created_before": "2026-01-02T00:00"}))
    assert "log_created_idx" in explained, explained
    assert RequestLog._meta.db_table in explained or "Index" in explained
