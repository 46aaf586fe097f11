"""Issue 12, point 4: every explorer filter is served by an index, never a plain scan of the log."""

import pytest
from django.db import connection, transaction

from console import filters
from routes_admin.models import RequestLog
from tests.factories import make_key, make_route

pytestmark = pytest.mark.django_db

CASES = {
    "key": ("key", "alice", "log_key_created_idx"),
    "route": ("route", "chat", "log_route_created_idx"),
    "model": ("model", "m1", "log_model_created_idx"),
    "status": ("status", "429", "log_error_status_idx"),
    "status class": ("status", "5xx", "log_error_status_idx"),
    "min latency": ("min_latency", "2000", "log_slow_idx"),
    "request id": ("request_id", "abc", "log_request_id_idx"),
    "error type": ("error_type", "upstream_timeout", "log_error_type_idx"),
    "limit": ("limit", "requests_per_minute", "log_limit_idx"),
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


@pytest.mark.parametrize("case", CASES)
def test_each_filter_uses_its_index(case):
    field, value, index = CASES[case]
    make_key(name="alice")
    make_route(name="chat")
    form = filters.CallFilter({field: value})
    assert form.is_valid(), form.errors
    explained = plan(filters.filtered(form.cleaned_data))
    assert index in explained, explained


def test_a_time_range_uses_the_time_index():
    form = filters.CallFilter({"start": "2026-01-01T00:00", "end": "2026-01-02T00:00"})
    assert form.is_valid()
    explained = plan(filters.filtered(form.cleaned_data))
    assert "log_created_idx" in explained, explained
    assert RequestLog._meta.db_table in explained or "Index" in explained
