"""The admin as an admin uses it (routes, keys, the request log, roles and history): in a real
browser (Debian's Chromium, headless).

Run alone with `pytest -m browser`; skipped when Chromium or Playwright is missing.
"""

from io import StringIO

import requests
from django.apps import apps as django_apps
from django.core.management import call_command

from routes_admin import roles
from routes_admin.models import APIKey, RequestLog, UpstreamTarget
from tests.browser import BROWSER, screenshot_path
from tests.factories import make_route, make_user
from tests.upstream import json_reply

CREDENTIAL = "Bearer sk-upstream-0123456789-SECRET-wxyz"

pytestmark = BROWSER


def shot(page, name: str) -> None:
    page.wait_for_load_state("networkidle")  # and the test's own queries wait for the page's
    page.screenshot(path=screenshot_path(f"gateway-admin-{name}.png"), full_page=True)


# admin_user first: the test database is then set up before the live server and dropped after it stops.
def test_an_admin_adds_a_route_issues_a_key_and_sees_the_call_in_the_log(admin_user, live_server, page, upstream):
    upstream.reply = json_reply(
        {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}}
    )
    base = live_server.url

    # Log in.
    page.goto(f"{base}/admin/login/?next=/admin/")
    page.fill("#id_username", "admin")
    page.fill("#id_password", "password")
    page.click("input[type=submit]")
    page.wait_for_selector("#site-name")
    assert "Configuration and audit" in page.content()
    shot(page, "1-index")

    # A route with one target that carries a credential.
    page.goto(f"{base}/admin/routes_admin/route/add/")
    page.fill("#id_name", "chat")
    page.fill("#id_path_prefix", "/v1")
    page.click("text=Add another Upstream target")
    page.fill("#id_targets-0-url", upstream.url)
    page.fill("#id_targets-0-credential_header", "Authorization")
    page.fill("#id_targets-0-credential_value", CREDENTIAL)
    page.click("input[name=_continue]")
    page.wait_for_selector("ul.messagelist")
    assert "was added successfully" in page.content()
    shot(page, "2-route-saved")

    # The stored credential is shown masked, never in full, and not in the form's fields either.
    html = page.content()
    assert CREDENTIAL not in html and "0123456789" not in html
    assert "****wxyz" in html
    assert page.input_value("#id_targets-0-credential_value") == ""
    page.wait_for_load_state("networkidle")
    target = UpstreamTarget.objects.get()
    assert target.credential_value == CREDENTIAL

    # Saving again without retyping keeps the credential.
    page.click("input[name=_continue]")
    page.wait_for_selector("ul.messagelist")
    page.wait_for_load_state("networkidle")
    target.refresh_from_db()
    assert target.credential_value == CREDENTIAL

    # An API key for that route: the secret is on the "issued" page, once.
    page.goto(f"{base}/admin/routes_admin/apikey/add/")
    page.fill("#id_name", "browser key")
    page.fill("#id_owner", "team browser")
    page.select_option("#id_routes_from", label="chat")  # in "Available routes"...
    page.click("#id_routes_add, #id_routes_add_link")  # ...then the "Choose" arrow
    assert page.locator("#id_routes_to option").all_inner_texts() == ["chat"]
    page.click("input[name=_save]")
    page.wait_for_selector("#api-key-secret")
    assert "API key issued" in page.title()
    secret = page.inner_text("#api-key-secret").strip()
    assert secret.startswith("gw_") and page.content().count(secret) == 1
    shot(page, "3-key-issued")

    key = APIKey.objects.get(name="browser key")
    assert [r.name for r in key.routes.all()] == ["chat"]
    page.click("text=Edit this key")
    page.wait_for_selector("#id_name")
    assert secret.split("_", 2)[2] not in page.content()  # shown only once
    shot(page, "4-key-page")

    # The key works through the gateway, and the upstream gets the target's credential.
    response = requests.post(
        f"{base}/v1/chat/completions", json={"model": "m"}, headers={"Authorization": f"Bearer {secret}"}, timeout=10
    )
    assert response.status_code == 200 and response.json()["usage"]["total_tokens"] == 7
    assert upstream.last.headers["authorization"] == CREDENTIAL
    request_id = response.headers["X-Request-ID"]
    assert requests.get(f"{base}/v1/models", timeout=10).status_code == 401

    # The call is in the request log, which is read-only.
    page.goto(f"{base}/admin/routes_admin/requestlog/")
    page.wait_for_selector("#result_list")
    log_html = page.content()
    assert request_id in log_html and "/v1/chat/completions" in log_html
    assert page.locator("#result_list tbody tr").count() == 2  # the 401 too, and nothing of the admin's own pages
    assert page.locator(".object-tools a.addlink").count() == 0
    assert page.locator("select[name=action] option[value=delete_selected]").count() == 0
    shot(page, "5-request-log")

    row = RequestLog.objects.get(request_id=request_id)
    assert (row.status, row.total_tokens, row.route_name) == (200, 7, "chat")
    page.goto(f"{base}/admin/routes_admin/requestlog/{row.pk}/change/")
    page.wait_for_selector("#content")
    assert page.locator("input[name=_save]").count() == 0  # a view, not a form
    assert page.locator("a.deletelink").count() == 0
    shot(page, "6-log-row")
    assert page.goto(f"{base}/admin/routes_admin/requestlog/add/").status == 403
    assert page.goto(f"{base}/admin/routes_admin/requestlog/{row.pk}/delete/").status == 403


# --- Roles, change history and what a new admin hit ----------------------------------


def log_in(page, base: str, username: str, password: str = "password") -> None:
    page.goto(f"{base}/admin/login/?next=/admin/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("input[type=submit]")
    page.wait_for_selector("#site-name")


def test_issuing_a_key_reload_copy_and_a_key_that_may_call_nothing(admin_user, live_server, page):
    base = live_server.url
    make_route(name="chat")
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=base)
    log_in(page, base, "admin")

    # No route and not "all routes": refused, as `issue_key` refuses it.
    page.goto(f"{base}/admin/routes_admin/apikey/add/")
    page.fill("#id_name", "nowhere")
    page.click("input[name=_save]")
    page.wait_for_selector(".errornote")
    assert "Say which routes the key may call" in page.content()
    page.wait_for_load_state("networkidle")
    assert not APIKey.objects.exists()

    page.select_option("#id_routes_from", label="chat")
    page.click("#id_routes_add, #id_routes_add_link")
    with page.expect_navigation() as issued:
        page.click("input[name=_save]")
    assert "no-store" in issued.value.headers["cache-control"]
    secret = page.inner_text("#api-key-secret").strip()
    page.click("#copy-api-key")
    page.wait_for_selector("#copy-api-key:has-text('Copied')")
    assert page.evaluate("navigator.clipboard.readText()") == secret
    shot(page, "7-key-issued-copied")

    # Reloading shows the secret no more and issues nothing.
    reloaded = page.reload()
    assert reloaded.status == 200 and "no-store" in reloaded.headers["cache-control"]
    page.wait_for_selector("#secret-already-shown")
    assert secret not in page.content()
    shot(page, "8-key-issued-reloaded")
    assert APIKey.objects.count() == 1


def test_a_new_admins_first_minutes_admin_without_slash_view_site_and_wide_numbers(admin_user, live_server, page):
    base = live_server.url
    assert page.goto(f"{base}/admin").url == f"{base}/admin/login/?next=/admin/"
    log_in(page, base, "admin")

    page.click("#user-tools a:has-text('View site')")
    page.wait_for_selector("#first-steps")
    assert page.title().startswith("First steps") and f"curl {base}/v1/chat/completions" in page.content()

    # "Max body bytes" shows all its digits; the measure itself fails on Django's narrow input.
    page.goto(f"{base}/admin/routes_admin/route/add/")
    field = page.locator("#id_max_body_bytes")
    assert field.input_value() == "10485760"
    fits = "el => el.scrollWidth <= el.clientWidth"
    assert field.evaluate(fits)
    assert not field.evaluate(f"el => {{ el.className = 'vIntegerField'; return ({fits})(el); }}")


def test_an_auditor_made_by_the_command_finds_an_operators_change_and_cannot_change_anything(
    admin_user, live_server, page, monkeypatch
):
    base = live_server.url
    roles.apply_roles(django_apps, roles.ROLES)  # live-server tests empty the tables, migrated groups too
    route = make_route(name="chat")
    make_user("otto", "Operator")
    monkeypatch.setenv("AUDE_PASSWORD", "a long and uncommon passphrase 7")
    call_command("create_user", "aude", "--role", "Auditor", "--password-from-env", "AUDE_PASSWORD", stdout=StringIO())

    # The operator changes the route's priority.
    log_in(page, base, "otto")
    page.goto(f"{base}/admin/routes_admin/route/{route.pk}/change/")
    page.fill("#id_priority", "5")
    page.click("input[name=_save]")
    page.wait_for_selector("ul.messagelist")
    page.click("#logout-form button")
    page.wait_for_load_state("networkidle")

    # The auditor finds it in the change history, with who, from where, before and after.
    log_in(page, base, "aude", "a long and uncommon passphrase 7")
    page.click("a[href='/admin/auditlog/logentry/']")
    page.wait_for_selector("#result_list")
    page.click("#changelist-filter a:has-text('otto')")
    page.wait_for_selector("#result_list")
    assert page.locator("#result_list tbody tr").count() == 1
    shot(page, "9-history-by-operator")
    page.click("#result_list tbody tr th a, #result_list tbody tr td a >> nth=0")
    page.wait_for_selector("#content")
    details = page.inner_text("#content")
    assert "otto" in details and "127.0.0.1" in details
    change_row = page.locator("tr", has_text="Priority").inner_text()
    assert "0" in change_row and "5" in change_row
    assert page.locator("input[name=_save]").count() == 0
    shot(page, "10-history-entry")

    # Nothing can be changed: read-only pages, no key actions, and the admin's own 403 page.
    page.goto(f"{base}/admin/routes_admin/route/{route.pk}/change/")
    assert page.locator("input[name=_save]").count() == 0 and page.locator("a.deletelink").count() == 0
    page.goto(f"{base}/admin/routes_admin/apikey/")
    assert page.locator("select[name=action] option[value=revoke]").count() == 0
    refused = page.goto(f"{base}/admin/routes_admin/route/add/")
    assert refused.status == 403 and "text/html" in refused.headers["content-type"]
    page.wait_for_selector("#permission-denied")
    shot(page, "11-auditor-refused")
    route.refresh_from_db()
    assert route.priority == 5
