"""The console in a real browser (Debian's Chromium, headless).

An admin and an auditor sign in, send traffic through the gateway, read the dashboard, find a
refused call and its explanation, and export it; the auditor finds nothing that changes anything.
At 390 px the pages fit the screen. Screenshots go to GATEWAY_SCREENSHOTS (default: a new temporary folder).
Run alone with `pytest -m browser`; skipped when Chromium or Playwright is missing.
"""

import requests
from django.apps import apps as django_apps

from routes_admin import roles
from routes_admin.models import RequestLog
from tests.browser import BROWSER, screenshot_path
from tests.factories import make_key, make_route, make_target, make_user
from tests.upstream import json_reply, refused_url

ZONE = "Europe/Paris"

pytestmark = BROWSER


def open_page(chromium, width=1280, height=900):
    context = chromium.new_context(viewport={"width": width, "height": height}, timezone_id=ZONE, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(15_000)
    return page


def shot(page, name: str) -> None:
    page.wait_for_load_state("networkidle")
    page.screenshot(path=screenshot_path(f"gateway-console-{name}.png"), full_page=True)


def sign_in(page, base: str, username: str, password: str) -> None:
    page.goto(f"{base}/console/")
    assert "/admin/login/" in page.url  # the console signs in through the admin's login
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("input[type=submit]")
    page.wait_for_selector("#zone")
    page.wait_for_function(f"document.getElementById('zone').textContent === '{ZONE}'")  # after the zone reload


def traffic(base: str, upstream, servers) -> dict:
    """Calls of every kind through the gateway; returns request ids by kind."""
    upstream.reply = json_reply({"usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}})
    chat = make_route(name="chat", strategy="failover", retry_non_idempotent=True)
    make_target(chat, refused_url(), name="demo-a", position=0)
    make_target(chat, upstream.url, name="demo-b", position=1)
    _, secret = make_key(routes=[chat], name="browser-key", owner="team web", requests_per_minute=4)
    ids = {}
    for n in range(5):  # 4 answered after a failover, the 5th refused by the limit
        response = requests.post(
            f"{base}/v1/chat/completions",
            json={"model": "demo-chat", "messages": []},
            headers={"Authorization": f"Bearer {secret}", "X-Request-ID": f"browser-{n}"},
            timeout=10,
        )
        ids.setdefault(response.status_code, response.headers["X-Request-ID"])
    assert set(ids) == {200, 429}
    assert requests.get(f"{base}/v1/models", timeout=10).status_code == 401
    return ids


def read_the_console(page, base: str, ids: dict, who: str) -> None:
    page.goto(f"{base}/console/?range=1h")
    assert page.inner_text("#kpi-calls") == "6"
    assert page.locator("svg.chart").count() == 2
    assert "browser-key" in page.content()
    assert page.locator("text=Keys near a limit").count() == 1 and "5 / 4" in page.content()  # the refused call counts
    shot(page, f"{who}-1-dashboard")

    page.goto(f"{base}/console/calls/")
    page.click("text=Filters")  # folded while none is in use
    page.fill("#id_status", "429")
    page.click("text=Find calls")
    page.wait_for_selector("table.calls")
    assert page.locator("table.calls tbody tr").count() == 1
    shot(page, f"{who}-2-explorer")

    page.click("table.calls tbody tr a")
    page.wait_for_selector("#outcome")
    assert page.inner_text("#outcome").startswith("refused: requests_per_minute 5/4 (counting this call), resets in")
    assert ids[429] in page.content()
    shot(page, f"{who}-3-refused-call")

    page.goto(f"{base}/console/calls/?request_id={ids[200]}")
    page.click("table.calls tbody tr a")
    page.wait_for_selector("#outcome")
    assert "demo-a could not be reached" in page.inner_text("#outcome")
    assert "retried on demo-b, answered 200" in page.inner_text("#outcome")
    shot(page, f"{who}-4-failover-call")

    page.goto(f"{base}/console/calls/?key=browser-key")
    with page.expect_download() as download:
        page.click("#export-csv")
    exported = open(download.value.path()).read()
    assert exported.count("\n") == 1 + 5 and ids[429] in exported and ids[200] in exported


def no_control_changes_anything(page) -> None:
    assert page.locator("form[method=post], form[method=POST]").count() == 0
    assert page.locator("a.addlink, a.deletelink, input[type=submit][name^=_]").count() == 0


# admin_user first: the test database is then set up before the live server and dropped after it stops.
def test_an_admin_sees_traffic_finds_a_refused_call_and_exports_it(
    admin_user, live_server, chromium, upstream, servers
):
    page = open_page(chromium)
    sign_in(page, live_server.url, "admin", "password")
    assert "No calls yet: here is how to make one" in page.content()
    assert "curl " in page.inner_text(".empty pre")
    shot(page, "admin-0-empty")

    ids = traffic(live_server.url, upstream, servers)
    read_the_console(page, live_server.url, ids, "admin")

    row = RequestLog.objects.get(request_id=ids[429])
    page.goto(f"{live_server.url}/console/calls/{row.pk}/")
    page.click("text=in the admin >> nth=0")  # to the key's admin page ...
    page.wait_for_selector("#id_name")
    page.click("text=Calls in the console")  # ... and back to its calls
    page.wait_for_selector("table.calls")
    assert page.locator("table.calls tbody tr").count() == 5


def test_an_auditor_reads_everything_and_finds_no_control_that_changes_anything(
    admin_user, live_server, chromium, upstream, servers
):
    roles.apply_roles(django_apps, roles.ROLES)  # live-server tests empty the tables, migrated groups too
    make_user("audrey", "Auditor", password="pw")
    ids = traffic(live_server.url, upstream, servers)

    page = open_page(chromium)
    sign_in(page, live_server.url, "audrey", "pw")
    no_control_changes_anything(page)
    read_the_console(page, live_server.url, ids, "auditor")
    for path in ("/console/", "/console/calls/", f"/console/calls/{RequestLog.objects.latest('id').pk}/"):
        page.goto(live_server.url + path)
        no_control_changes_anything(page)


def test_the_console_fits_a_phone(admin_user, live_server, chromium, upstream, servers):
    ids = traffic(live_server.url, upstream, servers)
    page = open_page(chromium, width=390, height=844)
    sign_in(page, live_server.url, "admin", "password")
    row = RequestLog.objects.get(request_id=ids[429])
    for name, path in (("dashboard", "/console/"), ("calls", "/console/calls/"), ("call", f"/console/calls/{row.pk}/")):
        page.goto(live_server.url + path)
        page.wait_for_load_state("networkidle")
        shot(page, f"phone-{name}")
        overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 0, f"{path} is {overflow}px wider than a 390px screen"
