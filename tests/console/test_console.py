"""The console's dashboard, log explorer, call page and export."""

import csv
import io
import json
from datetime import UTC, datetime, timedelta

import pytest
from auditlog.models import LogEntry
from django.contrib.auth.models import Group, User
from django.db import connection
from django.http import StreamingHttpResponse
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from proxy import rollups
from routes_admin.models import RequestLog, UsageRollup
from tests.factories import auth, make_key, make_route, make_target
from tests.upstream import json_reply, refused_url

pytestmark = pytest.mark.django_db
USAGE = {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}


def viewer(name="auditor") -> User:
    """A user with the Auditor role (routes_admin/roles.py): reads everything, changes nothing."""
    user = User.objects.create_user(name, password="pw", is_staff=True)
    user.groups.add(Group.objects.get(name="Auditor"))
    return user


@pytest.fixture
def console(client):
    client.force_login(viewer())
    return client


def send(client, secret="", model="demo-chat", path="/v1/chat/completions", **headers):
    if secret:
        headers.update(auth(secret))
    response = client.post(path, json.dumps({"model": model}), content_type="application/json", **headers)
    b"".join(response.streaming_content) if response.streaming else response.content
    return response


def log_row(**fields) -> RequestLog:
    values = dict(request_id="r", method="POST", path="/v1/chat/completions", status=200, latency_ms=10.0)
    values.update(fields)
    return RequestLog.objects.create(**values)


# Access: signed in through the admin's login, with the permission, and read-only.


def test_console_pages_send_strangers_to_the_admin_login(client):
    response = client.get("/console/calls/")
    assert response.status_code == 302
    assert response["Location"] == "/admin/login/?next=/console/calls/"


def test_console_pages_need_the_permission_to_view_the_log(client):
    client.force_login(User.objects.create_user("nobody"))
    assert client.get("/console/").status_code == 403


def test_the_console_changes_nothing_it_answers_no_post(console):
    for path in ("/console/", "/console/calls/", "/console/calls/export.csv"):
        assert console.post(path).status_code in (403, 405)  # CSRF or method: never a change


# Dashboard: figures from the rollups only.


def test_the_dashboard_shows_traffic_errors_latency_and_tokens_from_real_calls(console, client, upstream):
    upstream.reply = json_reply({"usage": USAGE})
    route = make_route(upstream.url, name="chat")
    key, secret = make_key(routes=[route], name="alice")
    for model in ("demo-chat", "demo-chat", "demo-embed"):
        send(client, secret, model=model)
    send(client)  # a 401

    response = console.get("/console/?range=1h")
    html = response.content.decode()
    assert response.status_code == 200
    assert '<strong id="kpi-calls">4</strong>' in html
    assert '<strong id="kpi-errors">25 %</strong>' in html
    assert '<strong id="kpi-tokens">21</strong>' in html
    assert "alice" in html and f"?api_key={key.pk}" in html  # tokens by key, linked to its calls (by id)
    assert "?model=demo-embed" in html and "?route_name=chat" in html
    assert html.count("<svg") == 2 and "calls / minute" in html and ">2xx<" in html and ">4xx<" in html
    assert ">p99<" in html and ">ms<" in html  # the latency chart's legend and unit


def test_the_dashboard_reads_rollups_not_the_log(console):
    now = timezone.now()
    rollups.add(
        [
            dict(created=now - timedelta(hours=h), key_prefix="", route_name="chat", model="m", status=200)
            | dict(error_type="", latency_ms=100.0, prompt_tokens=1, completion_tokens=1, total_tokens=2)
            for h in range(30)
        ]
    )
    with CaptureQueriesContext(connection) as queries:
        day = console.get("/console/").content.decode()
        week = console.get("/console/?range=7d").content.decode()
    assert not [q for q in queries.captured_queries if RequestLog._meta.db_table in q["sql"]]
    # Read in whole hours: the first one holds the call made 24 hours ago.
    assert '<strong id="kpi-calls">25</strong>' in day and "calls / hour" in day
    assert '<strong id="kpi-calls">30</strong>' in week
    assert "100 / 100 / 100 ms" not in day  # interpolated inside the 70-100 ms bucket
    assert "no key" in day


def test_rankings_over_days_read_by_the_hour_sum_the_same_calls_from_the_daily_rollups():
    """A 7-day range is drawn by the hour; its rankings take the whole days from the daily rollups
    and the hours at either end from the hourly ones: the same sums as adding up every hour."""
    from console import figures

    end = datetime(2026, 3, 10, 15, 0, tzinfo=UTC)
    start = end - timedelta(days=7)  # 2026-03-03 15:00: a partial day at either end
    rows = [
        dict(created=start - timedelta(hours=2) + timedelta(minutes=37 * n), key_prefix=f"k{n % 3}")
        | dict(route_name=f"route-{n % 4}", model=f"m{n % 5}", status=(200, 200, 429, 502)[n % 4])
        | dict(error_type="" if n % 4 < 2 else "x", latency_ms=10.0, prompt_tokens=1, completion_tokens=n % 7)
        | dict(total_tokens=1 + n % 7)
        for n in range(300)  # every 37 minutes from 2 hours before the range to past its end
    ]
    rollups.add(rows)
    shown = figures.compute(start, end)
    assert shown.period == "hour"
    first = figures.floor(start, "hour")
    inside = [row for row in rows if first <= row["created"] < end]

    def expected(field):
        sums: dict = {}
        for row in inside:
            totals = sums.setdefault(row[field], {"calls": 0, "total_tokens": 0, "errors": 0})
            totals["calls"] += 1
            totals["total_tokens"] += row["total_tokens"]
            totals["errors"] += 1 if row["error_type"] else 0
        return sums

    for attribute, field in (("by_route", "route_name"), ("by_model", "model"), ("by_key", "key_prefix")):
        ranked = {
            item["name"]: {k: item[k] for k in ("calls", "total_tokens", "errors")}
            for item in getattr(shown, attribute)
        }
        assert ranked == expected(field), attribute
    assert shown.calls == len(inside)


def test_a_custom_range_is_read_in_the_users_time_zone(console):
    moment = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)
    rollups.add([dict(created=moment, key_prefix="", route_name="r", model="", status=200, error_type="")
                 | dict(latency_ms=5.0, prompt_tokens=None, completion_tokens=None, total_tokens=None)])  # fmt: skip
    console.cookies["console_tz"] = "Asia/Tokyo"  # UTC+9: 09:30 UTC is 18:30 there
    html = console.get("/console/?range=custom&start=2026-03-01T18:00&end=2026-03-01T19:00").content.decode()
    assert '<strong id="kpi-calls">1</strong>' in html
    assert "Asia/Tokyo" in html and "2026-03-01 18:00" in html
    missed = console.get("/console/?range=custom&start=2026-03-01T09:00&end=2026-03-01T10:00").content.decode()
    assert '<strong id="kpi-calls">1</strong>' not in missed


def test_keys_near_a_limit_and_open_breakers_are_on_the_dashboard(console, client, upstream):
    upstream.reply = json_reply({"usage": USAGE})
    route = make_route(upstream.url, name="chat")
    make_target(route, refused_url(), name="dead-target")
    _, secret = make_key(routes=[route], name="busy-key", requests_per_minute=5)
    with override_settings(GATEWAY_BREAKER_FAILURES=1):
        for _ in range(4):
            send(client, secret)
    html = console.get("/console/").content.decode()
    assert "busy-key" in html and "requests_per_minute" in html and "4 / 5" in html
    assert "chat / dead-target" in html and ">open<" in html


def test_an_empty_gateway_says_how_to_make_a_first_call(console):
    html = console.get("/console/").content.decode()
    assert "No calls yet: here is how to make one" in html and "curl http://testserver/v1/chat/completions" in html
    assert "No calls yet" in console.get("/console/calls/").content.decode()


# Explorer.


def explore(console, **filters) -> list[str]:
    response = console.get("/console/calls/", filters)
    assert response.status_code == 200, response.content
    return [row.request_id for row in response.context["rows"]]


def test_every_filter_of_the_explorer_finds_its_calls(console):
    alice, _ = make_key(name="alice", owner="team red")
    bob, _ = make_key(name="bob", owner="team blue")
    chat = make_route(name="chat")
    now = timezone.now()
    log_row(request_id="ok", api_key=alice, key_prefix=alice.prefix, route=chat, model="m1", created=now)
    log_row(request_id="slow", api_key=bob, key_prefix=bob.prefix, model="m2", latency_ms=4000, created=now)
    log_row(
        request_id="refused", api_key=bob, status=429, error_type="rate_limit_exceeded", limit="requests_per_minute"
    )
    log_row(request_id="old", status=503, error_type="upstream_unavailable", created=now - timedelta(days=3))

    assert explore(console, key="alice") == ["ok"]
    assert explore(console, key="team blue") == ["refused", "slow"]  # newest first
    assert explore(console, key=f"gw_{alice.prefix}_…") == ["ok"]
    assert explore(console, route_name="chat") == ["ok"]
    assert explore(console, model="m2") == ["slow"]
    assert explore(console, status="429") == ["refused"]
    assert explore(console, status="5xx") == ["old"]
    assert explore(console, min_latency="1000") == ["slow"]
    assert explore(console, request_id="refused") == ["refused"]
    assert explore(console, error_type="upstream_unavailable") == ["old"]
    assert explore(console, limit="requests_per_minute") == ["refused"]
    day_before = timezone.localtime(now - timedelta(days=4)).strftime("%Y-%m-%dT%H:%M")
    two_days_ago = timezone.localtime(now - timedelta(days=2)).strftime("%Y-%m-%dT%H:%M")
    assert explore(console, created_after=day_before, created_before=two_days_ago) == ["old"]
    assert explore(console, key="nobody") == []


def test_bad_filters_are_explained_not_failed(console):
    response = console.get("/console/calls/", {"status": "abc", "min_latency": "-1"})
    assert response.status_code == 400
    assert "200, 429 or a class" in response.content.decode()
    assert console.get("/console/calls/", {"cursor": "%%%"}).status_code == 200  # a broken cursor: the first page


def test_pages_follow_a_cursor_without_gaps_or_repeats(console):
    same_moment = timezone.now()
    RequestLog.objects.bulk_create(
        RequestLog(request_id=f"c{i}", method="GET", path="/v1", status=200, latency_ms=1, created=same_moment)
        for i in range(120)
    )
    seen, query = [], {}
    while True:
        response = console.get("/console/calls/", query)
        seen += [row.request_id for row in response.context["rows"]]
        if not response.context["next_query"]:
            break
        query = dict(item.split("=") for item in response.context["next_query"].split("&"))
    assert len(seen) == 120 and len(set(seen)) == 120


def test_the_call_page_explains_a_failover(console, client, servers):
    route = make_route(name="chat", strategy="failover", retry_non_idempotent=True)
    make_target(route, refused_url(), name="demo-a", position=0)
    make_target(route, servers(json_reply({"usage": USAGE})).url, name="demo-b", position=1)
    _, secret = make_key(routes=[route])
    send(client, secret, HTTP_X_REQUEST_ID="failover-1")

    ids = explore(console, request_id="failover-1")
    row = RequestLog.objects.get(request_id=ids[0])
    html = console.get(f"/console/calls/{row.pk}/").content.decode()
    assert "demo-a could not be reached" in html and "retried on demo-b, answered 200 in" in html
    assert "matched route chat: prefix /v1" in html
    assert f"/admin/routes_admin/route/{route.pk}/change/" in html  # and back to the admin


def test_the_call_page_explains_a_refusal_by_a_limit(console, client, upstream):
    route = make_route(upstream.url, name="chat")
    _, secret = make_key(routes=[route], requests_per_minute=1)
    send(client, secret)
    send(client, secret)
    row = RequestLog.objects.get(status=429)
    html = console.get(f"/console/calls/{row.pk}/").content.decode()
    assert "refused: requests_per_minute 2/1 (counting this call), resets in" in html


# Export.


def test_export_streams_the_filtered_calls_as_csv_and_is_in_the_change_history(console):
    for i in range(5):
        log_row(request_id=f"e{i}", status=200 if i % 2 else 500, model="m", detail={"match": "route chat"})
    response = console.get("/console/calls/export.csv", {"status": "5xx"})
    assert isinstance(response, StreamingHttpResponse) and response["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert sorted(r["request_id"] for r in rows) == ["e0", "e2", "e4"]
    assert json.loads(rows[0]["detail"]) == {"match": "route chat"}
    entry = LogEntry.objects.get(action=LogEntry.Action.ACCESS)
    assert (entry.actor.username, entry.remote_addr, entry.content_type.model) == ("auditor", "127.0.0.1", "requestlog")
    zone = entry.serialized_data["export"]["time_zone"]  # the server's: no zone cookie yet
    assert entry.serialized_data == {"export": {"format": "csv", "filters": {"status": "5xx"}, "time_zone": zone}}
    assert entry.object_repr == f"request log export (csv, times in {zone}): status=5xx"
    admin = User.objects.create_superuser("boss", password="pw")
    console.force_login(admin)
    history = console.get("/admin/auditlog/logentry/")
    assert history.status_code == 200 and entry.object_repr in history.content.decode()


def test_export_as_json_lines(console):
    log_row(request_id="j1", total_tokens=7)
    response = console.get("/console/calls/export.jsonl")
    lines = b"".join(response.streaming_content).decode().splitlines()
    assert [json.loads(line)["request_id"] for line in lines] == ["j1"]
    assert json.loads(lines[0])["total_tokens"] == 7
    assert console.get("/console/calls/export.xml").status_code == 404


# The admin's key and route pages lead to their calls, and back.


def test_the_admin_key_and_route_pages_link_to_their_calls_and_back(admin_client):
    key, _ = make_key(name="alice")
    route = make_route(name="chat")
    key_page = admin_client.get(f"/admin/routes_admin/apikey/{key.pk}/change/").content.decode()
    assert f'href="/console/calls/?api_key={key.pk}"' in key_page
    route_page = admin_client.get(f"/admin/routes_admin/route/{route.pk}/change/").content.decode()
    assert 'href="/console/calls/?route_name=chat"' in route_page
    back = admin_client.get(f"/console/calls/?key={key.prefix}").content.decode()
    assert f'href="/admin/routes_admin/apikey/{key.pk}/change/"' in back
    assert (
        f'href="/admin/routes_admin/route/{route.pk}/change/"'
        in admin_client.get("/console/calls/?route_name=chat").content.decode()
    )


def test_times_are_shown_in_the_browsers_zone_and_the_zone_is_named(console):
    log_row(request_id="z", created=datetime(2026, 6, 1, 12, 0, tzinfo=UTC))
    console.cookies["console_tz"] = "America/New_York"
    html = console.get("/console/calls/").content.decode()
    assert "2026-06-01</span> 08:00:00" in html and "America/New_York" in html
    console.cookies["console_tz"] = "Not/AZone"
    assert "2026-06-01</span> 12:00:00" in console.get("/console/calls/").content.decode()  # the server's zone (UTC)


def test_rollup_rows_for_the_dashboard_come_from_the_writer(console, client, upstream):
    upstream.reply = json_reply({"usage": USAGE})
    route = make_route(upstream.url, name="chat")
    _, secret = make_key(routes=[route])
    send(client, secret)
    assert UsageRollup.objects.filter(period="minute", dimension="all").get().total_tokens == 7
