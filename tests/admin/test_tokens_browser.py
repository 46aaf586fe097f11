"""The admin's "Management tokens" page in a real browser (Debian's Chromium, headless), per role:
an Admin sees everyone's tokens and revokes one of them (the API refuses it at once); an Operator
and an Auditor see only their own, and another's token page is not theirs to open.

Run alone with `pytest -m browser`; skipped when Chromium or Playwright is missing.
"""

import requests
from django.apps import apps as django_apps

from routes_admin import roles
from routes_admin.models import ManagementToken
from tests.browser import BROWSER
from tests.factories import make_user

pytestmark = BROWSER
PAGE = "/admin/routes_admin/managementtoken/"


def sign_in(page, base: str, username: str) -> None:
    page.context.clear_cookies()
    page.goto(f"{base}/admin/login/?next=/admin/")
    page.fill("#id_username", username)
    page.fill("#id_password", "password")
    page.click("input[type=submit]")
    page.wait_for_selector("#site-name")


def listed(page) -> list[str]:
    """The token names of the list page's rows."""
    return sorted(page.locator("#result_list tbody tr th").all_inner_texts())


def token_works(base: str, secret: str) -> bool:
    answer = requests.get(f"{base}/api/routes/", headers={"Authorization": f"Bearer {secret}"}, timeout=10)
    return answer.status_code == 200


def test_an_admin_sees_and_revokes_everyones_tokens_others_see_their_own(live_server, page):
    roles.apply_roles(django_apps, roles.ROLES)  # live-server tests empty the tables, migrated groups too
    people = {name: make_user(name, role=role) for name, role in (("ada", "Admin"), ("ops", "Operator"))}
    people["eve"] = make_user("eve", role="Auditor")
    secrets = {name: ManagementToken.objects.issue(user, f"{name}-ci")[1] for name, user in people.items()}
    ops_token = ManagementToken.objects.get(user=people["ops"])
    base = live_server.url
    assert token_works(base, secrets["ops"])

    sign_in(page, base, "ada")
    page.goto(base + PAGE)
    assert listed(page) == ["ada-ci", "eve-ci", "ops-ci"]
    page.check(f"#result_list input.action-select[value='{ops_token.pk}']")
    page.select_option("select[name=action]", "revoke")
    with page.expect_navigation():
        page.click("button[name=index]")
    assert "Revoked 1 token(s)" in page.inner_text("ul.messagelist")
    ops_token.refresh_from_db()
    assert ops_token.revoked is not None and not token_works(base, secrets["ops"])
    assert token_works(base, secrets["eve"])  # only the one chosen

    for name in ("ops", "eve"):
        sign_in(page, base, name)
        page.goto(base + PAGE)
        assert listed(page) == [f"{name}-ci"], name
        others = ManagementToken.objects.exclude(user=people[name]).values_list("pk", flat=True)
        for pk in others:
            page.goto(f"{base}{PAGE}{pk}/change/")
            assert "-ci" not in page.inner_text("#content"), (name, pk)
            assert "exist" in page.inner_text("ul.messagelist")  # "... doesn't exist. Perhaps it was deleted?"
