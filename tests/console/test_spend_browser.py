"""Spend in a real browser (Debian's Chromium, headless): a team with a daily budget spends through
the gateway; the dashboard shows the spend, splits it by team, ranks the spenders and names the
team near its budget; the team's page shows its keys, its spend against the budget, its limits
and the alert its spend crossed; the key's admin page shows its own spend. At 390 px the pages fit.
Screenshots go to GATEWAY_SCREENSHOTS (default: a new temporary folder)."""

from datetime import timedelta
from decimal import Decimal

import requests
from django.utils import timezone

from routes_admin.models import BudgetAlert, ModelPrice
from routes_admin.services import spend
from tests.browser import BROWSER
from tests.console.test_console_browser import open_page, shot, sign_in
from tests.factories import make_key, make_route
from tests.upstream import json_reply

pytestmark = BROWSER
USAGE = {"prompt_tokens": 100, "completion_tokens": 50, "total_tokens": 150}  # 0.002 at 10 / 20 per 1M


def team_spends(base: str, upstream) -> dict:
    """Team acme (daily budget 0.01, 40 requests a day) with two keys: 4 calls of 0.002, then a key
    outside any team makes one."""
    upstream.reply = json_reply({"choices": [], "usage": USAGE})
    ModelPrice.objects.create(
        model="m", input_per_million=10, output_per_million=20, valid_from=timezone.now() - timedelta(minutes=1)
    )
    route = make_route(upstream.url, name="chat")
    team = spend.save_team("acme", budget_per_day="0.01", requests_per_day=40, alert_thresholds="50,80")
    keys, secrets = {}, {}
    for name in ("alpha", "beta", "loner"):  # all written before the calls: the server writes their rows
        keys[name], secrets[name] = make_key(name=name, routes=[route])
        if name != "loner":
            spend.join_team(keys[name], team)
    for name, secret in secrets.items():
        for _ in range(3 if name == "alpha" else 1):
            answer = requests.post(
                f"{base}/v1/chat/completions",
                json={"model": "m", "max_tokens": 50, "messages": []},
                headers={"Authorization": f"Bearer {secret}"},
                timeout=10,
            )
            assert answer.status_code == 200, answer.text
    return {"team": team, **keys}


def test_the_dashboard_and_the_team_page_show_where_the_money_goes(admin_user, live_server, chromium, upstream):
    made = team_spends(live_server.url, upstream)
    page = open_page(chromium)
    sign_in(page, live_server.url, "admin", "password")  # one request at a time: the calls' rows are written
    assert sorted(BudgetAlert.objects.values_list("threshold", flat=True)) == [50, 80]

    page.goto(f"{live_server.url}/console/?range=1h")
    assert page.inner_text("#kpi-spend") == "0.01 USD"
    assert page.locator("#spend svg.chart rect[fill]").count() >= 1
    near = page.inner_text("#near-budgets")
    assert "acme" in near and "80 %" in near
    shot(page, "spend-1-dashboard")
    page.click("#spend-by >> text=teams")
    page.wait_for_selector("#spend-legend")
    assert page.inner_text("#spend-legend").split("\n") == ["acme", "no team"]
    assert "Spend over time by team" in page.content()
    shot(page, "spend-2-dashboard-by-team")

    page.click("#near-budgets >> text=acme")
    page.wait_for_selector("#team-today")
    assert page.inner_text("#team-today") == "0.008 USD"
    budgets = page.inner_text("#budgets")
    assert "Daily 0.01 USD" in budgets and "80 %" in budgets
    assert "4 / 40" in page.inner_text("#limits")  # the team's own counter, both keys' calls
    keys = page.inner_text("#team-keys")
    assert "alpha" in keys and "0.006 USD" in keys and "beta" in keys and "loner" not in keys
    alerts = page.inner_text("table.alerts")
    assert "80 % of the daily budget of 0.01 USD" in alerts and "50 %" in alerts
    shot(page, "spend-3-team")

    page.click("#team-keys >> text=alpha")  # the key's admin page
    page.wait_for_selector("#key-spend")
    assert "0.006 USD" in page.inner_text("#key-spend")
    shot(page, "spend-4-key")

    page.goto(f"{live_server.url}/console/teams/")
    assert "acme" in page.inner_text("#teams") and "(80 %)" in page.inner_text("#teams")

    page.goto(f"{live_server.url}/console/calls/?group=team")
    groups = page.inner_text("#groups")
    assert groups.index("acme") < groups.index("no team") and "0.008" in groups
    shot(page, "spend-5-calls-per-team")
    assert Decimal(made["alpha"].budget_per_day or 0) == 0  # the key has no budget of its own


def test_the_spend_pages_fit_a_phone(admin_user, live_server, chromium, upstream):
    made = team_spends(live_server.url, upstream)
    page = open_page(chromium, width=390, height=844)
    sign_in(page, live_server.url, "admin", "password")
    paths = {
        "dashboard": "/console/?spend_by=team",
        "team": f"/console/teams/{made['team'].pk}/",
        "teams": "/console/teams/",
        "alerts": "/console/alerts/",
    }
    for name, path in paths.items():
        page.goto(live_server.url + path)
        page.wait_for_load_state("networkidle")
        shot(page, f"spend-phone-{name}")
        overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 0, f"{path} is {overflow}px wider than a 390px screen"
