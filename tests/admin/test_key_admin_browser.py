"""A key's life in the admin, in a real browser (Debian's Chromium, headless), for each role: an
operator rotates (the page says when the old secret stops) and revokes after a confirmation page;
an auditor is offered neither; the home page leads to the console.

Run alone with `pytest -m browser`; skipped when Chromium or Playwright is missing.
"""

from django.apps import apps as django_apps

from routes_admin import roles
from routes_admin.models import APIKey
from tests.browser import BROWSER
from tests.factories import make_key, make_route, make_user

pytestmark = BROWSER
# admin_user first in each test: the test database is set up before the live server and dropped after it.


def role_user(username: str, role: str):
    """The role groups come from a migration; a live server's earlier test may have flushed them."""
    roles.apply_roles(django_apps, roles.ROLES)
    return make_user(username, role=role)


def sign_in(page, base: str, username: str) -> None:
    page.goto(f"{base}/admin/login/?next=/admin/")
    page.fill("#id_username", username)
    page.fill("#id_password", "password")
    page.click("input[type=submit]")
    page.wait_for_selector("#site-name")


def test_an_operator_rotates_then_revokes_after_confirming(admin_user, live_server, page):
    role_user("ops", "Operator")
    route = make_route("http://127.0.0.1:9/", name="chat", path_prefix="/v1")
    key, _ = make_key(name="billing-bot", owner="finance team", routes=[route])
    base = live_server.url
    sign_in(page, base, "ops")
    assert page.locator("#console-link a").get_attribute("href") == "/console/"

    page.goto(f"{base}/admin/routes_admin/apikey/{key.pk}/change/")
    page.click("#rotate-key")
    page.fill("#grace-minutes", "60")
    page.click("input[type=submit]")
    page.wait_for_selector("#grace-end")
    assert "Secret rotated" in page.content() and "keeps working until" in page.inner_text("#grace-end")

    page.goto(f"{base}/admin/routes_admin/apikey/{key.pk}/change/")
    page.click("#revoke-key")
    page.wait_for_selector("#confirm-revoke")
    text = page.inner_text("#revoke-keys")
    assert "finance team" in text and "chat (/v1)" in text and "401 invalid_api_key" in text
    assert APIKey.objects.get(pk=key.pk).revoked is None
    page.click("#confirm-revoke")
    page.wait_for_selector("ul.messagelist")
    assert APIKey.objects.get(pk=key.pk).revoked is not None


def test_an_auditor_is_offered_no_key_action(admin_user, live_server, page):
    role_user("eve", "Auditor")
    key, _ = make_key(name="billing-bot")
    base = live_server.url
    sign_in(page, base, "eve")
    page.goto(f"{base}/admin/routes_admin/apikey/{key.pk}/change/")
    assert page.locator("#rotate-key").count() == 0 and page.locator("#revoke-key").count() == 0
    assert "Rotate the secret" not in page.content()
    response = page.goto(f"{base}/admin/routes_admin/apikey/{key.pk}/rotate/")
    assert response.status == 403 and "Your role does not allow this" in page.content()
