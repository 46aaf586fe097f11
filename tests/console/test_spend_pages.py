"""Where spend shows: the key's page (admin) and the team's pages (console), today and this month
against each budget; the dashboard's spend over time, top spenders and who is near a budget, read
from the rollups; the explorer's cost column, cost order within a period and sums per team (its
export and the API's summary alike); the alerts list."""

import csv
import io
import json
from datetime import UTC, timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from proxy import rollups
from routes_admin import spending
from routes_admin.models import BudgetAlert, RequestLog
from routes_admin.services import spend
from tests.console.test_console import console, log_row  # noqa: F401 (a fixture)
from tests.factories import make_key, make_route
from tests.proxy.test_budgets import COST, call, priced  # noqa: F401 (a fixture)
from tests.roles import bearer, make_user, token_for

pytestmark = pytest.mark.django_db


def rollup_row(created, cost, **fields) -> dict:
    """A log row as the recorder makes it, for rollups.add."""
    row = dict(created=created, key_prefix="", api_key_id=None, route_name="chat", model="m", status=200)
    row |= dict(error_type="", latency_ms=10.0, prompt_tokens=1, completion_tokens=1, total_tokens=2, cost=cost)
    return row | fields


@pytest.fixture
def team_calls(client, priced):  # noqa: F811
    """Team acme (daily budget 5 x COST) with two keys, one of them with its own monthly budget;
    three calls by the first key, one by the second, one by a key outside the team."""
    team = spend.save_team("acme", budget_per_day=str(5 * COST), requests_per_day=100, alert_thresholds="50")
    first, first_secret = make_key(name="alpha", routes=[priced], budget_per_month=10 * COST)
    second, second_secret = make_key(name="beta", routes=[priced])
    spend.join_team(first, team)
    spend.join_team(second, team)
    for secret in (first_secret, first_secret, first_secret, second_secret):
        assert call(client, secret).status_code == 200
    assert call(client, make_key(name="loner", routes=[priced])[1]).status_code == 200
    return team, first, second


def test_the_key_page_shows_its_spend_against_its_budgets_and_its_alerts(team_calls, admin_client):
    _, first, _ = team_calls
    page = admin_client.get(f"/admin/routes_admin/apikey/{first.id}/change/").content.decode()
    assert "Spent today</th><td>0.006 USD" in page  # three calls of 0.002
    assert "Monthly budget</th><td>0.006 USD of 0.02 USD (30%)" in page
    assert "reserved by calls in flight" in page
    assert "team acme" in page and f"/console/teams/{first.team_id}/" in page
    assert f"/console/alerts/?scope=key&amp;owner={first.id}" in page


def test_the_team_pages_show_spend_against_budgets_limits_keys_and_alerts(team_calls, console):  # noqa: F811
    team, first, second = team_calls
    listing = console.get("/console/teams/").content.decode()
    assert f'href="/console/teams/{team.id}/">acme</a>' in listing
    assert "0.008 USD" in listing and "of 0.01 USD (80 %)" in listing  # 4 calls of the team's 5
    assert '<td class="num">1</td>\n  </tr>' in listing  # its alert this month (50 %)
    page = console.get(f"/console/teams/{team.id}/").content.decode()
    assert '<strong id="team-today">0.008 USD</strong>' in page
    assert 'Daily 0.01 USD</td><td class="num">0.008 USD</td><td class="num">80 %' in page
    assert 'requests_per_day</td><td class="num">4 / 100' in page  # the team's own counter, all keys
    assert ">alpha</a>" in page and ">beta</a>" in page and "loner" not in page
    assert "0.006 USD" in page and "monthly 0.02 USD (30 %)" in page  # alpha's own budget
    assert "50 % of the daily budget of 0.01 USD" in page  # the alert the third call crossed
    assert "waiting to be sent" in page
    assert console.get("/console/teams/999/").status_code == 404


def test_the_spend_pages_read_the_rollups_not_the_log(team_calls, console):  # noqa: F811
    team, first, _ = team_calls
    RequestLog.objects.all().delete()  # pruned: the rollups keep the spend
    with CaptureQueriesContext(connection) as queries:
        page = console.get(f"/console/teams/{team.id}/").content.decode()
        dashboard = console.get("/console/").content.decode()
    assert not [q for q in queries.captured_queries if RequestLog._meta.db_table in q["sql"]]
    assert '<strong id="team-today">0.008 USD</strong>' in page
    assert '<strong id="kpi-spend">0.01 USD</strong>' in dashboard


def test_the_dashboard_shows_spend_top_spenders_and_who_is_near_a_budget(team_calls, console):  # noqa: F811
    page = console.get("/console/").content.decode()
    assert '<strong id="kpi-spend">0.01 USD</strong>' in page
    spenders = page.split('id="spenders"')[1]
    assert spenders.index(">alpha</a>") < spenders.index(">beta</a>")  # by spend: alpha 0.006, beta 0.002
    assert "?team=acme" in spenders and "0.008" in spenders
    assert "Spend by model" in spenders and "?model=m" in spenders
    near = page.split('id="near-budgets"')[1].split("</table>")[0]
    assert "team <a" in near and ">acme</a>" in near and "80 %" in near
    assert "alpha" not in near  # 30 % of its monthly budget
    assert "<svg" in page.split('id="spend"')[1] and 'id="spend-legend"' in page
    by_team = console.get("/console/?spend_by=team").content.decode()
    legend = by_team.split('id="spend-legend"')[1].split("</ul>")[0]
    assert "acme" in legend and "no team" in legend and "others" not in legend  # the loner's call has no team
    assert "Spend over time by team" in by_team


def test_the_spend_chart_names_the_biggest_spenders_and_sums_the_rest(console):  # noqa: F811
    now = timezone.now()
    rows = [rollup_row(now - timedelta(minutes=n), Decimal(n + 1), model=f"model-{n}") for n in range(8)]
    rollups.add(rows)
    page = console.get("/console/?range=1h&spend_by=model").content.decode()
    legend = page.split('id="spend-legend"')[1].split("</ul>")[0]
    assert [f"model-{n}" in legend for n in range(8)] == [False] * 3 + [True] * 5  # the 5 biggest
    assert "others" in legend
    assert "model-7 8</title>" in page  # each bar's amount in its tooltip


@pytest.mark.parametrize("zone", ["America/New_York", "Asia/Kolkata", "UTC"])
def test_today_and_this_month_are_the_servers_calendar_whatever_the_rollups_step(settings, zone):
    """Rollups are per UTC minute, hour and day; the budgets' day starts at midnight in TIME_ZONE
    (a half hour off UTC in Kolkata): a call a minute before that midnight is yesterday's."""
    settings.TIME_ZONE = zone
    timezone.deactivate()
    midnight = spending.period_starts()["today"]
    rollups.add(
        [
            rollup_row(midnight - timedelta(minutes=1), Decimal("1"), route_name="r"),
            rollup_row(midnight, Decimal("2"), route_name="r"),
            rollup_row(midnight + timedelta(hours=5, minutes=7), Decimal("4"), route_name="r"),
        ]
    )
    route = make_route(name="r")
    spent = spending.owner_spend("route", route)
    assert spent["today"].spent == Decimal("6")
    month = 7 if midnight.day > 1 else 6  # on the 1st, yesterday's call is last month's
    assert spent["month"].spent == Decimal(month)
    starts = [(period, since.astimezone(UTC)) for period, since, _ in spending.tiles(midnight)]
    assert starts[-1][0] == "day" and ("minute" in dict(starts)) == (zone == "Asia/Kolkata")


def test_the_explorer_shows_costs_and_sorts_by_cost_within_a_period(console):  # noqa: F811
    now = timezone.now()
    for n, cost in enumerate(["0.5", "0.002", None, "3", "0.75"]):
        log_row(request_id=f"r{n}", created=now - timedelta(minutes=n), model="m", cost=cost and Decimal(cost))
    newest = console.get("/console/calls/").content.decode()
    assert newest.count('class="num cost"') == 5 and "no price" in newest and ">0.75<" in newest
    refused = console.get("/console/calls/?order=cost")
    assert refused.status_code == 400 and "within a period" in refused.content.decode()
    since = (now - timedelta(hours=1)).isoformat()
    page = console.get("/console/calls/", {"order": "cost", "created_after": since}).content.decode()
    order = [page.index(f'title="r{n}"') for n in (3, 4, 0, 1)]
    assert order == sorted(order) and 'title="r2"' not in page  # no price: left out of this order
    assert "most expensive first" in page
    cheap = console.get("/console/calls/", {"order": "cost", "created_after": since, "min_cost": "0.6"}).content
    assert b'title="r3"' in cheap and b'title="r4"' in cheap and b'title="r0"' not in cheap


def test_cost_order_pages_follow_a_cursor_without_gaps_or_repeats(console):  # noqa: F811
    now = timezone.now()
    for n in range(120):
        log_row(request_id=f"c{n}", created=now - timedelta(seconds=n % 7), cost=Decimal(n % 13) / 100)
    seen, query = [], {"order": "cost", "created_after": (now - timedelta(hours=1)).isoformat()}
    while True:
        response = console.get("/console/calls/", query)
        page = response.content.decode()
        seen += [part.split('"')[0] for part in page.split('title="c')[1:]]
        if 'id="next-page"' not in page:
            break
        link = page.split('id="next-page" href="?')[1].split('"')[0].replace("&amp;", "&")
        query = dict(pair.split("=", 1) for pair in link.split("&"))
        query = {name: value.replace("%3A", ":").replace("%2B", "+") for name, value in query.items()}
    assert sorted(seen, key=int) == [str(n) for n in range(120)]
    costs = [Decimal(int(n) % 13) for n in seen]
    assert costs == sorted(costs, reverse=True)


def test_the_explorer_its_export_and_the_api_sum_calls_per_team(team_calls, console):  # noqa: F811
    team, _, _ = team_calls
    page = console.get("/console/calls/?group=team").content.decode()
    groups = page.split('id="groups"')[1]
    assert '<a href="/console/calls/?team=acme">acme</a>' in groups and "no team" in groups
    assert groups.index("acme") < groups.index("no team")  # biggest spend first
    assert "0.008" in groups
    exported = console.get("/console/calls/export.csv?group=team")
    lines = list(csv.reader(io.StringIO(b"".join(exported.streaming_content).decode())))
    assert lines[0][:3] == ["team", "calls", "errors"]
    assert lines[1][:2] == ["acme", "4"] and Decimal(lines[1][6]) == 4 * COST
    by_key = console.get("/console/calls/export.jsonl?group=key&team=acme")
    keys = [json.loads(line) for line in b"".join(by_key.streaming_content).decode().splitlines()]
    assert [(k["key_name"], k["calls"], k["cost"]) for k in keys] == [
        ("alpha", 3, "0.006000000000"),
        ("beta", 1, "0.002000000000"),
    ]
    api = console.get("/api/logs/summary/?by=team", **bearer(token_for("auditor"))).json()
    assert api["currency"] == "USD"
    assert [(g["value"], g["calls"], g["cost"]) for g in api["groups"]] == [
        ("acme", 4, "0.008000000000"),
        ("", 1, "0.002000000000"),
    ]
    assert console.get("/api/logs/summary/?by=planet", **bearer(token_for("auditor"))).status_code == 400


def test_the_alerts_are_listed_in_the_console_and_the_api(team_calls, console):  # noqa: F811
    team, _, _ = team_calls
    alert = BudgetAlert.objects.get()
    page = console.get("/console/alerts/").content.decode()
    assert f'href="/console/teams/{team.id}/">acme</a>' in page and "50 % of the daily budget" in page
    assert f"?request_id={alert.request_id}" in page
    narrowed = console.get("/console/alerts/?scope=key&owner=1").content.decode()
    assert "No budget alert yet" in narrowed
    listed = console.get("/api/alerts/?scope=team", **bearer(token_for("auditor"))).json()
    assert [(a["owner_name"], a["threshold"], a["state"]) for a in listed["results"]] == [("acme", 50, "pending")]


def test_the_call_page_says_which_alert_threshold_the_call_crossed(team_calls, console):  # noqa: F811
    alert = BudgetAlert.objects.get()
    row = RequestLog.objects.get(request_id=alert.request_id)
    page = console.get(f"/console/calls/{row.pk}/").content.decode()
    assert "its cost carried the team acme&#x27;s spend to 0.006 USD, past 50 % of its daily budget of 0.01 USD" in page


def test_a_console_user_without_a_role_sees_no_spend_page(client):
    client.force_login(make_user("nobody"))
    for path in ("/console/teams/", "/console/alerts/", "/console/teams/1/"):
        assert client.get(path).status_code == 403
