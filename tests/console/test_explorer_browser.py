"""The log explorer in a real browser (Debian's Chromium, headless), as an auditor uses it: the
"Last 1h / 24h / 7d" links set the range's start (shown in the form, in the browser's time zone)
and keep the other filters; part of a model's or route's name, in any case, finds its calls.

Run alone with `pytest -m browser`; skipped when Chromium or Playwright is missing.
"""

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from django.apps import apps as django_apps
from django.utils import timezone

from routes_admin import roles
from routes_admin.models import RequestLog
from tests.browser import BROWSER
from tests.factories import make_route, make_user

pytestmark = BROWSER
ZONE = "Asia/Tokyo"  # far from UTC: a start written in the wrong zone would be 9 hours off


def log_row(request_id: str, age: timedelta, **fields) -> RequestLog:
    values = dict(method="POST", path="/v1/chat/completions", status=200, latency_ms=10.0)
    values.update(fields)
    return RequestLog.objects.create(request_id=request_id, created=timezone.now() - age, **values)


def follow(page, selector: str) -> None:
    with page.expect_navigation():
        page.click(selector)


def shown(page) -> list[str]:
    page.wait_for_selector("table.calls, .empty-result")
    return sorted(page.locator("table.calls tbody tr td:first-child a").evaluate_all("a => a.map(x => x.title)"))


def test_presets_and_partial_names_find_the_calls(live_server, chromium):
    roles.apply_roles(django_apps, roles.ROLES)  # live-server tests empty the tables, migrated groups too
    make_user("audrey", "Auditor", password="pw")
    chat = make_route(name="chat-EU")
    log_row("recent-mini", timedelta(minutes=20), model="gpt-4o-MINI", route=chat, route_name="chat-EU")
    log_row("recent-llama", timedelta(minutes=40), model="llama-3.1-8b")
    log_row("morning-mini", timedelta(hours=5), model="gpt-4o-mini", status=500)
    log_row("last-week", timedelta(days=3), model="gpt-4o", route=chat, route_name="chat-EU")

    context = chromium.new_context(viewport={"width": 1280, "height": 900}, timezone_id=ZONE)
    page = context.new_page()
    page.set_default_timeout(15_000)
    base = live_server.url
    page.goto(f"{base}/console/calls/")
    page.fill("#id_username", "audrey")
    page.fill("#id_password", "pw")
    before = timezone.now()
    page.click("input[type=submit]")
    page.wait_for_function(f"document.getElementById('zone').textContent === '{ZONE}'")

    assert shown(page) == ["last-week", "morning-mini", "recent-llama", "recent-mini"]
    follow(page, "#preset-1h")
    assert shown(page) == ["recent-llama", "recent-mini"]
    after = timezone.now()
    # The browser's local time, an hour before the page was made (to the second).
    start = datetime.fromisoformat(page.input_value("#id_created_after")).replace(tzinfo=ZoneInfo(ZONE))
    assert before - timedelta(hours=1, seconds=1) <= start <= after - timedelta(hours=1)

    page.fill("#id_model_contains", "4O-mIn")
    follow(page, "text=Find calls")
    assert shown(page) == ["recent-mini"]
    follow(page, "#preset-24h")  # a preset keeps the other filters
    assert shown(page) == ["morning-mini", "recent-mini"]
    assert page.input_value("#id_model_contains") == "4O-mIn"
    follow(page, "#preset-7d")
    page.fill("#id_model_contains", "")
    page.fill("#id_route_contains", "eu")
    follow(page, "text=Find calls")
    assert shown(page) == ["last-week", "recent-mini"]
    context.close()
