"""The admin reads as one product: a way to the console from its home page, only the apps a role
can use, plural names and filter labels in words, durations in hours and minutes, and the
first-steps page naming every path the gateway keeps for itself."""

import pytest

from routes_admin.durations import in_words
from routes_admin.models import RESERVED_AREAS, RESERVED_ENDPOINTS
from tests.factories import make_user

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("role", ["Admin", "Operator", "Auditor"])
def test_the_home_page_links_the_console_and_hides_what_the_role_cannot_use(client, role):
    client.force_login(make_user("someone", role=role))
    html = client.get("/admin/").content.decode()
    assert 'id="console-link"><a href="/console/"' in html
    assert "Axes" not in html and "Task results" not in html and "Access attempts" not in html
    assert "deliverys" not in html


def test_webhook_deliveries_are_named_in_plain_english():
    """The heading of a job's deliveries in the admin (an inline on the job's page)."""
    from jobs.models import WebhookDelivery

    assert WebhookDelivery._meta.verbose_name_plural == "webhook deliveries"


def test_key_filters_say_revoked_yes_or_no(client):
    client.force_login(make_user("someone", role="Operator"))
    html = client.get("/admin/routes_admin/apikey/").content.decode()
    assert "?revoked=yes" in html and "?revoked=no" in html
    assert "Not empty" not in html


def test_durations_read_in_hours_and_minutes():
    assert in_words(35160) == "9 h 46 min"
    assert in_words(725) == "12 min 5 s" and in_words(600) == "10 min" and in_words(40) == "40 s"
    assert in_words(2 * 86400 + 3 * 3600) == "2 d 3 h"


def test_first_steps_names_every_reserved_path(client):
    client.force_login(make_user("someone", role="Auditor"))
    html = client.get("/admin/first-steps/").content.decode()
    for name in RESERVED_AREAS:
        assert f"<code>/{name}/</code>" in html
    for name in RESERVED_ENDPOINTS:
        assert f"<code>/{name}</code>" in html
