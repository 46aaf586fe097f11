"""What the change history records beyond model saves, and what cannot erase it: management tokens
issued and revoked, quota counters reset, and no flush or TRUNCATE of the entries."""

import json
from datetime import timedelta
from io import StringIO

import pytest
from auditlog.models import LogEntry
from django.core.management import CommandError, call_command, get_commands
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from routes_admin.models import KeyUsage, ManagementToken
from tests.factories import make_key, make_plan, make_user
from tests.roles import bearer

pytestmark = pytest.mark.django_db

needs_postgresql = pytest.mark.skipif(connection.vendor != "postgresql", reason="the trigger is PostgreSQL's")


def token_entries(token) -> list[LogEntry]:
    return list(LogEntry.objects.get_for_object(token).order_by("timestamp", "pk"))


def every_entry_as_text() -> str:
    return json.dumps(list(LogEntry.objects.values()), default=str)


# --- Management tokens -------------------------------------------------------------------------


def test_a_token_issued_and_revoked_through_the_api_is_in_the_history_with_its_user(client):
    user = make_user("otto", "Operator")
    _, first = ManagementToken.objects.issue(user, "first")
    response = client.post("/api/tokens/", data={"name": "ci"}, content_type="application/json", **bearer(first))
    assert response.status_code == 201
    secret = response.json()["token"]
    token = ManagementToken.objects.get(pk=response.json()["id"])

    assert client.delete(f"/api/tokens/{token.pk}/", **bearer(first)).status_code == 204
    created, revoked = token_entries(token)
    assert created.action == LogEntry.Action.CREATE and created.actor == user
    assert created.changes_dict["name"] == ["None", "ci"]
    assert created.changes_dict["hashed_secret"][1] == "(hidden)"
    assert revoked.action == LogEntry.Action.UPDATE and revoked.actor == user
    assert revoked.changes_dict["revoked"][0] == "None" and revoked.changes_dict["revoked"][1] != "None"
    assert secret not in every_entry_as_text() and token.hashed_secret not in every_entry_as_text()


def test_a_token_created_by_the_command_names_the_command():
    make_user("otto", "Operator")
    out = StringIO()
    call_command("create_token", "otto", "--name", "deploy", stdout=out)
    token = ManagementToken.objects.get(name="deploy")
    (created,) = token_entries(token)
    assert created.additional_data == {"command": "create_token"}
    assert out.getvalue().splitlines()[-1] not in every_entry_as_text()


def test_using_a_token_writes_no_history(client):
    token, secret = ManagementToken.objects.issue(make_user("aude", "Auditor"), "read")
    before = LogEntry.objects.count()
    ManagementToken.objects.filter(pk=token.pk).update(last_used=timezone.now() - timedelta(hours=1))
    assert client.get("/api/routes/", **bearer(secret)).status_code == 200
    token.refresh_from_db()
    assert token.last_used > timezone.now() - timedelta(minutes=1)
    assert LogEntry.objects.count() == before


def test_a_token_cannot_revoke_itself_without_confirm_self(client):
    user = make_user("otto", "Operator")
    token, secret = ManagementToken.objects.issue(user, "mine")
    response = client.delete(f"/api/tokens/{token.pk}/", **bearer(secret))
    assert response.status_code == 409
    error = response.json()["error"]
    assert "?confirm=self" in error["message"] and error["request_id"]
    token.refresh_from_db()
    assert token.revoked is None
    assert client.get("/api/tokens/", **bearer(secret)).status_code == 200

    assert client.delete(f"/api/tokens/{token.pk}/?confirm=yes", **bearer(secret)).status_code == 409
    assert client.delete(f"/api/tokens/{token.pk}/?confirm=self", **bearer(secret)).status_code == 204
    token.refresh_from_db()
    assert token.revoked is not None
    assert client.get("/api/tokens/", **bearer(secret)).status_code == 401


def test_another_token_or_a_session_revokes_a_token_without_confirmation(client):
    user = make_user("otto", "Operator")
    token, _ = ManagementToken.objects.issue(user, "old")
    _, other = ManagementToken.objects.issue(user, "new")
    assert client.delete(f"/api/tokens/{token.pk}/", **bearer(other)).status_code == 204
    third, _ = ManagementToken.objects.issue(user, "third")
    client.force_login(user)
    assert client.delete(f"/api/tokens/{third.pk}/").status_code == 204
    assert ManagementToken.objects.filter(revoked__isnull=False).count() == 2


# --- Quota counters reset ----------------------------------------------------------------------


def test_resetting_the_quota_counters_in_the_admin_records_what_the_usage_rows_held(client):
    key, _ = make_key(all_routes=True, quota_plan=make_plan(name="p", tokens_per_day=1000))
    today = timezone.localdate()
    KeyUsage.objects.create(api_key=key, day=today, requests=7, total_tokens=1234)
    operator = make_user("otto", "Operator")
    client.force_login(operator)
    response = client.post(
        "/admin/routes_admin/apikey/", {"action": "reset_quota_counters", "_selected_action": [key.pk]}
    )
    assert response.status_code == 302
    assert not KeyUsage.objects.filter(api_key=key).exists()

    entry = LogEntry.objects.get_for_object(key).latest("pk")
    assert entry.action == LogEntry.Action.UPDATE and entry.actor == operator
    before, after = entry.changes_dict["usage this month"]
    assert "7 requests, 1,234 tokens (1 day(s) since" in before and after == "reset to zero"
    page = client.get(f"/admin/auditlog/logentry/{entry.pk}/change/")
    assert page.status_code == 200 and "1,234 tokens" in page.content.decode()


# --- Nothing erases the history ----------------------------------------------------------------


@pytest.fixture
def entry():
    make_plan(name="p")
    return LogEntry.objects.latest("pk")


def test_auditlogflush_is_ours_and_refuses_in_every_form(entry):
    assert get_commands()["auditlogflush"] == "routes_admin"
    for args in (["--yes"], ["--truncate", "--yes"], ["--before-date", "2999-01-01", "--yes"], []):
        with pytest.raises(CommandError, match="append-only"):
            call_command("auditlogflush", *args, stdout=StringIO())
    assert LogEntry.objects.filter(pk=entry.pk).exists()


@needs_postgresql
def test_the_database_refuses_to_truncate_the_history(entry):
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL gateway.allow_history_truncate = 'off'")  # as outside the test suite
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # else TRUNCATE stops at the test's own pending checks
    with pytest.raises(DatabaseError, match="append-only: TRUNCATE refused"), transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("TRUNCATE auditlog_logentry")
    with pytest.raises(CommandError, match="couldn't be flushed"):
        call_command("flush", interactive=False, stdout=StringIO(), stderr=StringIO())
    assert LogEntry.objects.filter(pk=entry.pk).exists()
