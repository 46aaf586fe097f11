"""A cursor the list did not make (tampered, truncated, made up) is refused with a 400 in the JSON
error shape on the API's cursor lists, and ignored with a message in the console; never a 500."""

import base64
import os
from datetime import timedelta
from urllib.parse import quote

import pytest
from auditlog.models import LogEntry
from django.contrib.auth.models import Group, User
from django.contrib.contenttypes.models import ContentType
from django.utils import timezone

from routes_admin.models import RequestLog
from tests.roles import bearer, token_for

pytestmark = pytest.mark.django_db


def b64(text: str | bytes) -> str:
    return base64.b64encode(text if isinstance(text, bytes) else text.encode()).decode()


# DRF's cursor is base64 of a query string: o (offset), r (reverse), p (position: the ordering value).
API_CURSORS = {
    "not base64": "%%%",
    "not ascii": "é",
    "random bytes": b64(os.urandom(24)),
    "base64 of junk": b64("this is not a cursor"),
    "position not a time": b64("p=not-a-time"),
    "position a number": b64("p=12345"),
    "position empty": b64("p="),
    "position without offset": b64("p=2026-01-01 00:00:00"),
    "position before year 1 in UTC": b64("p=0001-01-01 00:00:00+05:00"),
    "position after year 9999 in UTC": b64("p=9999-12-31 23:59:59-05:00"),
    "position with an offset PostgreSQL refuses": b64("p=2026-01-01 00:00:00+20:00"),
    "negative offset": b64("o=-1&p=2026-01-01 00:00:00%2B00:00"),
    "offset not a number": b64("o=many"),
    "reverse not a number": b64("r=yes"),
}


def rows(count=3):
    now = timezone.now()
    for i in range(count):
        RequestLog.objects.create(
            created=now - timedelta(seconds=i), request_id=f"r{i}", method="POST", path="/v1", status=200, latency_ms=1
        )


@pytest.mark.parametrize("path", ["/api/logs/", "/api/history/"])
@pytest.mark.parametrize("cursor", API_CURSORS.values(), ids=API_CURSORS.keys())
def test_a_tampered_cursor_on_the_api_is_a_json_400(client, path, cursor):
    rows()
    LogEntry.objects.create(
        content_type=ContentType.objects.get_for_model(RequestLog), object_pk="1", object_repr="x", action=0, changes={}
    )
    response = client.get(f"{path}?cursor={quote(cursor)}", **bearer(token_for("auditor")))
    assert response.status_code == 400, (cursor, response.status_code, response.content[:300])
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and "cursor" in error["fields"]


def test_a_huge_offset_is_cut_to_the_lists_bound_and_answers(client):
    rows()
    cursor = b64("o=99999999999999999999999999&p=2026-01-01 00:00:00%2B00:00")
    response = client.get(f"/api/logs/?cursor={quote(cursor)}", **bearer(token_for("auditor")))
    assert response.status_code == 200 and response.json()["results"] == []


def test_the_cursors_the_api_gives_still_work(client):
    rows(5)
    seen, url = [], "/api/logs/?page_size=2"
    while url:
        page = client.get(url, **bearer(token_for("auditor"))).json()
        seen += [row["request_id"] for row in page["results"]]
        url = page["next"]
    assert seen == ["r0", "r1", "r2", "r3", "r4"]


CONSOLE_CURSORS = {
    "not base64": "%%%",
    "random bytes": b64(os.urandom(24)).rstrip("="),
    "base64 of junk": b64("junk"),
    "id not a number": b64("2026-01-01T00:00:00+00:00|abc"),
    "time not a time": b64("yesterday|5"),
    "id past 64 bits": b64("2026-01-01T00:00:00+00:00|99999999999999999999999"),
    "negative id": b64("2026-01-01T00:00:00+00:00|-5"),
    "time without offset": b64("2026-01-01T00:00:00|5"),
    "time before year 1 in UTC": b64("0001-01-01T00:00:00+05:00|5"),
    "time after year 9999 in UTC": b64("9999-12-31T23:59:59-05:00|5"),
    "three parts": b64("2026-01-01T00:00:00+00:00|5|6"),
    "not utf-8": b64(b"\xff\xfe|1"),
}


@pytest.mark.parametrize("cursor", CONSOLE_CURSORS.values(), ids=CONSOLE_CURSORS.keys())
def test_a_tampered_cursor_in_the_console_shows_the_newest_calls_and_says_so(client, cursor):
    user = User.objects.create_user("auditor", password="pw", is_staff=True)
    user.groups.add(Group.objects.get(name="Auditor"))
    client.force_login(user)
    rows()
    response = client.get(f"/console/calls/?cursor={quote(cursor)}")
    assert response.status_code == 200, response.status_code
    assert [row.request_id for row in response.context["rows"]] == ["r0", "r1", "r2"]
    assert 'id="broken-cursor"' in response.content.decode()
