"""A key keeps one identity across rotations: the dashboard, its links, the explorer and the call
page follow the key (its id), not the prefix of its current secret; the admin says when the old
secret stops working."""

import json
import re
from datetime import timedelta

import pytest
from django.utils import timezone

from proxy import rollups
from routes_admin.models import RequestLog
from tests.factories import auth, make_key, make_route, make_user
from tests.upstream import json_reply

pytestmark = pytest.mark.django_db


@pytest.fixture
def route(upstream):
    upstream.reply = json_reply({"ok": True, "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}})
    return make_route(upstream.url, name="chat")


def call(client, secret: str) -> int:
    response = client.post(
        "/v1/chat/completions", json.dumps({"model": "m"}), content_type="application/json", **auth(secret)
    )
    b"".join(response.streaming_content) if response.streaming else response.content
    return response.status_code


def test_the_dashboard_lists_a_rotated_key_once_and_links_all_its_calls(client, route):
    key, old = make_key(name="billing-bot", routes=[route])
    old_prefix = key.prefix
    assert call(client, old) == 200
    new = key.rotate(grace=timedelta(hours=1))
    assert call(client, new) == 200 and call(client, old) == 200
    client.force_login(make_user("auditor", role="Auditor"))

    html = client.get("/console/").content.decode()
    # One row per ranking for the key, by name, with all three calls; no row for the old prefix.
    assert html.count(f"?api_key={key.pk}") == 2 and "billing-bot" in html
    assert old_prefix not in html and f"?key={old_prefix}" not in html
    ranked = re.findall(rf'api_key={key.pk}">billing-bot</a></td>\s*<td class="num">(\d+)</td>', html)
    assert ranked == ["3", "3"]

    explorer = client.get(f"/console/calls/?api_key={key.pk}").content.decode()
    assert explorer.count("billing-bot") >= 3 and "no call matches" not in explorer.lower()
    assert f"/admin/routes_admin/apikey/{key.pk}/change/" in explorer  # back to the key in the admin

    first = RequestLog.objects.filter(key_prefix=old_prefix).earliest("created")
    page = client.get(f"/console/calls/{first.pk}/").content.decode()
    assert f"?api_key={key.pk}" in page  # a call made before the rotation links to the key's calls


def test_rollups_made_before_keys_were_kept_by_id_still_count_for_the_key(client, route):
    """Older rollup rows hold a prefix: the key's current or previous one counts as the key."""
    key, _ = make_key(name="legacy-bot", routes=[route])
    old_prefix = key.prefix
    key.rotate(grace=timedelta(hours=1))
    now = timezone.now()
    row = dict(created=now, route_name="chat", model="m", status=200, error_type="", latency_ms=5.0)
    row |= dict(prompt_tokens=1, completion_tokens=1, total_tokens=2)
    rollups.add([row | {"key_prefix": old_prefix}, row | {"key_prefix": key.prefix, "api_key_id": key.pk}])
    client.force_login(make_user("auditor", role="Auditor"))
    html = client.get("/console/").content.decode()
    assert re.findall(rf'api_key={key.pk}">legacy-bot</a></td>\s*<td class="num">(\d+)</td>', html) == ["2", "2"]


def test_the_key_page_and_the_rotation_page_say_when_the_old_secret_stops(client, route):
    key, _ = make_key(name="billing-bot", routes=[route])
    old_prefix = key.prefix
    client.force_login(make_user("operator", role="Operator"))
    response = client.post(f"/admin/routes_admin/apikey/{key.pk}/rotate/", {"grace_minutes": "90"}, follow=True)
    html = response.content.decode()
    key.refresh_from_db()
    end = timezone.localtime(key.previous_expires)
    assert "Secret rotated" in html and "API key issued" not in html
    assert f"The old secret (gw_{old_prefix}_…) keeps working until {end:%Y-%m-%d %H:%M}" in html
    change = client.get(f"/admin/routes_admin/apikey/{key.pk}/change/").content.decode()
    assert f"keeps working until {end:%Y-%m-%d %H:%M}" in change

    key.previous_expires = timezone.now() - timedelta(minutes=1)
    key.save(update_fields=["previous_expires"])
    assert "stopped working at" in client.get(f"/admin/routes_admin/apikey/{key.pk}/change/").content.decode()
