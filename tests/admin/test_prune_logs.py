"""manage.py prune_logs: retention of the request log, in batches."""

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from routes_admin.models import RequestLog


def make_logs(count: int, age: timedelta) -> None:
    created = timezone.now() - age
    RequestLog.objects.bulk_create(
        RequestLog(
            created=created, request_id=f"r{i}-{age.days}", method="POST", path="/v1/x", status=200, latency_ms=1.0
        )
        for i in range(count)
    )


def prune(*args) -> str:
    out = StringIO()
    call_command("prune_logs", *args, stdout=out)
    return out.getvalue()


@pytest.mark.django_db
def test_rows_older_than_the_retention_are_deleted_and_newer_kept():
    make_logs(25, timedelta(days=40))
    make_logs(10, timedelta(days=29, hours=23))
    output = prune("--older-than", "30")
    assert "Deleted 25 request log row(s)" in output
    assert RequestLog.objects.count() == 10
    assert all(row.created > timezone.now() - timedelta(days=30) for row in RequestLog.objects.all())


@pytest.mark.django_db
def test_rows_are_deleted_in_batches_of_the_given_size():
    make_logs(25, timedelta(days=10))
    with CaptureQueriesContext(connection) as queries:
        prune("--older-than", "1", "--batch-size", "10")
    deletes = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("DELETE")]
    assert len(deletes) == 3  # 10 + 10 + 5
    assert RequestLog.objects.count() == 0


@pytest.mark.django_db
def test_dry_run_counts_without_deleting():
    make_logs(5, timedelta(days=10))
    assert "5 request log row(s)" in prune("--older-than", "7", "--dry-run")
    assert RequestLog.objects.count() == 5


@pytest.mark.django_db
def test_nonsense_arguments_are_refused():
    with pytest.raises(CommandError):
        prune("--older-than", "-1")
    with pytest.raises(CommandError):
        prune("--older-than", "1", "--batch-size", "0")
