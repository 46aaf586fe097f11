"""The log explorer's time presets and partial matching (one FilterSet, so the API's log list has
them too), and the export: the key's name and owner, the job and whether the tokens are estimated
in every row; its history entry is an access entry that records the filters with their time zone."""

import csv
import io
import json
import uuid
from datetime import datetime, timedelta
from urllib.parse import parse_qs

import pytest
from auditlog.models import LogEntry
from django.utils import timezone

from console import zones
from routes_admin.filtersets import RequestLogFilterSet
from routes_admin.models import RequestLog
from tests.factories import make_key, make_route, make_user
from tests.roles import bearer, token_for

pytestmark = pytest.mark.django_db


def log_row(**fields) -> RequestLog:
    values = dict(request_id="r", method="POST", path="/v1/chat/completions", status=200, latency_ms=10.0)
    values.update(fields)
    return RequestLog.objects.create(**values)


def found(**query) -> list[str]:
    filterset = RequestLogFilterSet(query, queryset=RequestLog.objects.order_by("request_id"))
    assert filterset.is_valid(), filterset.errors
    return [row.request_id for row in filterset.qs]


@pytest.fixture
def console(client):
    client.force_login(make_user("audrey", "Auditor"))
    return client


# Partial matching, in the one FilterSet.


def test_part_of_a_model_name_matches_in_any_case():
    log_row(request_id="big", model="gpt-4o")
    log_row(request_id="mini", model="GPT-4o-mini")
    log_row(request_id="other", model="llama-3.1-8b")
    assert found(model_contains="gpt-4O") == ["big", "mini"]
    assert found(model_contains="MINI") == ["mini"]
    assert found(model="gpt-4o") == ["big"]  # the exact filter stays exact


def test_part_of_a_route_name_matches_its_calls_and_those_of_a_deleted_route():
    chat_eu, chat_us = make_route(name="chat-EU"), make_route(name="chat-us", path_prefix="/v2")
    log_row(request_id="eu", route=chat_eu, route_name="chat-EU")
    log_row(request_id="us", route=chat_us, route_name="chat-us")
    log_row(request_id="embed", route_name="embeddings")  # its route was deleted since
    assert found(route_contains="CHAT") == ["eu", "us"]
    assert found(route_contains="eu") == ["eu"]
    assert found(route_contains="bedd") == ["embed"]  # no route has such a name now: the names as logged


def test_the_api_log_list_takes_the_partial_filters(client):
    log_row(request_id="mini", model="gpt-4o-mini", route_name="Chat")
    log_row(request_id="other", model="llama", route_name="embed")
    auditor = token_for("auditor")
    for query in ("model_contains=MINI", "route_contains=cha"):
        answer = client.get(f"/api/logs/?{query}", **bearer(auditor))
        assert answer.status_code == 200, answer.content
        assert [row["request_id"] for row in answer.json()["results"]] == ["mini"]
    assert client.get("/api/logs/?model_contains=a&model_contains=b", **bearer(auditor)).status_code == 400


def test_the_explorer_offers_the_partial_filters(console):
    log_row(request_id="mini", model="gpt-4o-mini")
    log_row(request_id="other", model="llama")
    page = console.get("/console/calls/").content.decode()
    assert 'name="model_contains"' in page and 'name="route_contains"' in page
    assert "mini" in console.get("/console/calls/", {"model_contains": "4O-M"}).content.decode()
    assert "llama" not in console.get("/console/calls/", {"model_contains": "4O-M"}).content.decode()


# Presets: links that set the time range and keep the other filters.


def test_the_presets_set_the_start_of_the_range_and_keep_the_other_filters(console):
    now = timezone.now()
    for request_id, age in (
        ("recent", timedelta(minutes=30)),
        ("today", timedelta(hours=3)),
        ("week", timedelta(days=2)),
    ):
        log_row(request_id=request_id, created=now - age, status=500)
    console.cookies[zones.COOKIE] = "Asia/Tokyo"
    page = console.get("/console/calls/", {"status": "5xx", "created_before": "2000-01-01T00:00"})
    links = dict(page.context["presets"])
    assert list(links) == ["1h", "24h", "7d"]
    html = page.content.decode()
    expected = {"1h": ["recent"], "24h": ["recent", "today"], "7d": ["recent", "today", "week"]}
    for name, query in links.items():
        assert f'id="preset-{name}"' in html
        given = parse_qs(query)
        assert given["status"] == ["5xx"] and "created_before" not in given  # until now
        start = datetime.fromisoformat(given["created_after"][0])
        assert start.tzinfo is None  # as the form's date-time input shows it, in the user's zone
        shown = console.get(f"/console/calls/?{query}")
        assert shown.context["form"]["created_after"].value() == given["created_after"][0]
        assert sorted(row.request_id for row in shown.context["rows"]) == sorted(expected[name]), name


# The export.


def test_the_export_has_the_keys_name_and_owner_the_job_and_estimated_usage(console):
    route = make_route(name="chat")
    key, _ = make_key(routes=[route], name="billing-bot", owner="=finance")
    job = uuid.uuid4()
    log_row(request_id="run", api_key=key, key_prefix=key.prefix, job_id=job, total_tokens=9, usage_estimated=True)
    log_row(request_id="plain", created=timezone.now() - timedelta(seconds=5))

    text = b"".join(console.get("/console/calls/export.csv").streaming_content).decode()
    rows = {row["request_id"]: row for row in csv.DictReader(io.StringIO(text))}
    assert {name: rows["run"][name] for name in ("key_name", "key_owner", "job_id", "usage_estimated")} == {
        "key_name": "billing-bot",
        "key_owner": "'=finance",  # neutralised for spreadsheets, as every caller-given cell
        "job_id": str(job),
        "usage_estimated": "True",
    }
    assert (rows["plain"]["key_name"], rows["plain"]["job_id"], rows["plain"]["usage_estimated"]) == ("", "", "False")

    lines = b"".join(console.get("/console/calls/export.jsonl").streaming_content).decode().splitlines()
    run, plain = (json.loads(line) for line in lines)
    assert (run["key_name"], run["key_owner"], run["job_id"], run["usage_estimated"]) == (
        "billing-bot",
        "=finance",
        str(job),
        True,
    )
    assert (plain["key_name"], plain["key_owner"], plain["job_id"], plain["usage_estimated"]) == (
        None,
        None,
        None,
        False,
    )


def test_the_exports_history_entry_is_an_access_entry_with_the_filters_time_zone(console):
    console.cookies[zones.COOKIE] = "Europe/Paris"
    answer = console.get("/console/calls/export.jsonl", {"created_after": "2026-01-15T10:00", "status": "5xx"})
    assert answer.status_code == 200
    b"".join(answer.streaming_content)
    entry = LogEntry.objects.get(action=LogEntry.Action.ACCESS)  # the only one: reading changes nothing
    assert entry.actor.username == "audrey" and entry.content_type.model == "requestlog"
    assert entry.serialized_data == {
        "export": {
            "format": "jsonl",
            "filters": {"created_after": "2026-01-15T10:00:00+01:00", "status": "5xx"},
            "time_zone": "Europe/Paris",
        }
    }
    assert entry.object_repr == (
        "request log export (jsonl, times in Europe/Paris): created_after=2026-01-15T10:00:00+01:00, status=5xx"
    )
