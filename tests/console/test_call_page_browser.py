"""The call page in a real browser (Debian's Chromium, headless), as an auditor reads it: estimated
tokens marked as such, a client disconnect named in the summary, the route named on a 413, one
period at the end of the summary, and a job's submission and run linked both ways."""

import uuid

from django.apps import apps as django_apps

from routes_admin import roles
from routes_admin.models import RequestLog
from tests.browser import BROWSER
from tests.factories import make_key, make_route, make_user

pytestmark = BROWSER


def sign_in(page, base: str) -> None:
    page.goto(f"{base}/console/")
    page.fill("#id_username", "audrey")
    page.fill("#id_password", "pw")
    page.click("input[type=submit]")
    page.wait_for_selector("#zone")


def log_row(**fields) -> RequestLog:
    values = {"request_id": f"r-{uuid.uuid4().hex[:8]}", "method": "POST", "path": "/v1/chat/completions"}
    values.update(status=200, latency_ms=1500.0)
    values.update(fields)
    return RequestLog.objects.create(**values)


def test_the_call_page_says_what_is_estimated_and_links_a_jobs_calls(live_server, page):
    roles.apply_roles(django_apps, roles.ROLES)  # live-server tests empty the tables, migrated groups too
    make_user("audrey", "Auditor", password="pw")
    route = make_route(name="chat")
    key, _ = make_key(routes=[route], name="web")
    common = {"api_key": key, "key_prefix": key.prefix, "route": route, "route_name": "chat", "model": "gpt-test"}
    cut = log_row(
        **common,
        streamed=True,
        error_type="client_disconnected",
        prompt_tokens=10,
        completion_tokens=20,
        total_tokens=30,
        usage_estimated=True,
        detail={"attempts": [{"target": "gpu", "status": 200, "ms": 80}]},
    )
    too_large = log_row(
        **common,
        status=413,
        error_type="request_too_large",
        detail={"why": "The request body is larger than this route allows (10 bytes)."},
    )
    job_id = str(uuid.uuid4())
    submitted = log_row(**common, status=202, request_id="job-call", detail={"job": job_id})
    ran = log_row(**common, request_id="job-call", job_id=job_id, queue_ms=1234.0, total_tokens=7)
    base = live_server.url
    sign_in(page, base)

    page.goto(f"{base}/console/calls/{cut.pk}/")
    outcome = page.text_content("#outcome")
    assert "client disconnected" in outcome and outcome.endswith("ended.")
    assert "estimated" in page.text_content("#tokens")

    page.goto(f"{base}/console/calls/{too_large.pk}/")
    outcome = page.text_content("#outcome")
    assert "(route chat)" in outcome and ".." not in outcome and outcome.endswith(".")

    page.goto(f"{base}/console/calls/{submitted.pk}/")
    assert job_id in page.text_content("#job")
    assert "estimated" not in page.text_content("#tokens")
    page.click("#job a")
    page.wait_for_url(f"**/console/calls/{ran.pk}/")
    job = page.text_content("#job")
    assert "its run" in job and "1234 ms in the queue" in job
    page.click("#job a")
    page.wait_for_url(f"**/console/calls/{submitted.pk}/")
