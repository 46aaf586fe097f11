"""The management API's docs page in a real browser: /api/docs/ runs from the gateway's own files (no CDN), and
an admin signed in to the admin can call the API from it with their session.

Skipped when Chromium or Playwright is missing.
"""

from urllib.parse import urlsplit

from routes_admin.models import QuotaPlan
from tests.browser import BROWSER, screenshot_path
from tests.factories import make_plan

pytestmark = BROWSER


# admin_user first: the test database is then set up before the live server and dropped after it stops.
def test_the_docs_page_needs_no_cdn_and_calls_the_api_with_the_session(admin_user, live_server, page):
    make_plan(name="visible-in-the-answer")
    base = live_server.url
    hosts = set()
    page.on("request", lambda request: hosts.add(urlsplit(request.url).netloc))

    page.goto(f"{base}/admin/login/?next=/admin/")
    page.fill("#id_username", "admin")
    page.fill("#id_password", "password")
    page.click("input[type=submit]")
    page.wait_for_url(f"{base}/admin/")

    page.goto(f"{base}/api/docs/")
    page.wait_for_selector("text=/api/plans/")
    operation = page.locator(".opblock-get", has_text="/api/plans/").first
    operation.locator(".opblock-summary").click()
    page.click("text=Try it out")
    page.click("button.execute")
    answer = page.locator(".responses-wrapper .live-responses-table")
    answer.wait_for()
    assert "visible-in-the-answer" in answer.inner_text()
    operation.locator(".opblock-summary").click()  # closed again

    # A write from the page: the session's CSRF token goes along.
    create = page.locator(".opblock-post", has_text="/api/plans/").first
    create.locator(".opblock-summary").click()
    create.locator("text=Try it out").click()
    create.locator("textarea.body-param__text").fill('{"name": "made-in-the-docs", "requests_per_minute": 5}')
    create.locator("button.execute").click()
    created = create.locator(".live-responses-table")
    created.wait_for()
    assert "made-in-the-docs" in created.inner_text()
    assert QuotaPlan.objects.filter(name="made-in-the-docs", requests_per_minute=5).exists()
    page.screenshot(path=screenshot_path("gateway-api-docs.png"), full_page=False)
    assert hosts == {urlsplit(base).netloc}  # every script, style and call went to the gateway itself
