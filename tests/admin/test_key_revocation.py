"""Revoking a key asks first: the list action and the key's own Revoke button show what stops
working and for whom, and revoke only when confirmed; roles that may not change keys see no
Revoke button and are refused."""

import pytest

from routes_admin.models import APIKey
from tests.factories import make_key, make_route, make_user

pytestmark = pytest.mark.django_db
CHANGELIST = "/admin/routes_admin/apikey/"


@pytest.fixture
def key():
    route = make_route("http://127.0.0.1:9/", name="chat", path_prefix="/v1")
    key, _ = make_key(name="billing-bot", owner="finance team", routes=[route])
    return key


def test_the_list_action_asks_before_revoking(client, key):
    client.force_login(make_user("operator", role="Operator"))
    asked = client.post(CHANGELIST, {"action": "revoke", "_selected_action": [key.pk]})
    html = asked.content.decode()
    assert asked.status_code == 200 and "Revoke this key?" in html
    assert "billing-bot" in html and "finance team" in html and "chat (/v1)" in html
    assert "401 invalid_api_key" in html
    key.refresh_from_db()
    assert key.revoked is None  # nothing happened yet

    done = client.post(CHANGELIST, {"action": "revoke", "_selected_action": [key.pk], "post": "yes"}, follow=True)
    assert "Revoked 1 key(s)" in done.content.decode()
    key.refresh_from_db()
    assert key.revoked is not None


def test_the_key_page_has_a_revoke_button_that_asks_first(client, key):
    client.force_login(make_user("operator", role="Operator"))
    page = client.get(f"{CHANGELIST}{key.pk}/change/").content.decode()
    assert f'href="{CHANGELIST}{key.pk}/revoke/"' in page
    asked = client.get(f"{CHANGELIST}{key.pk}/revoke/").content.decode()
    assert "finance team" in asked and "401 invalid_api_key" in asked
    assert APIKey.objects.get(pk=key.pk).revoked is None
    client.post(f"{CHANGELIST}{key.pk}/revoke/", {"post": "yes"})
    assert APIKey.objects.get(pk=key.pk).revoked is not None
    again = client.get(f"{CHANGELIST}{key.pk}/change/").content.decode()
    assert f"{key.pk}/revoke/" not in again  # a revoked key has no Revoke button


def test_an_auditor_sees_no_revoke_button_and_is_refused(client, key):
    client.force_login(make_user("auditor", role="Auditor"))
    page = client.get(f"{CHANGELIST}{key.pk}/change/").content.decode()
    assert "/revoke/" not in page
    assert client.get(f"{CHANGELIST}{key.pk}/revoke/").status_code == 403
    assert client.post(f"{CHANGELIST}{key.pk}/revoke/", {"post": "yes"}).status_code == 403
    assert APIKey.objects.get(pk=key.pk).revoked is None
