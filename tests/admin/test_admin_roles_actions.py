"""Buttons follow the role: actions a role may not take are not offered to it (and refused if
tried); management tokens are listed in the admin, everyone's for an Admin, one's own otherwise."""

import pytest
from auditlog.models import LogEntry

from routes_admin.models import ManagementToken
from tests.factories import make_key, make_user

pytestmark = pytest.mark.django_db
KEYS = "/admin/routes_admin/apikey/"
TOKENS = "/admin/routes_admin/managementtoken/"


def test_an_auditor_is_offered_no_rotation_revocation_or_key_actions(client):
    key, _ = make_key(name="billing-bot")
    client.force_login(make_user("auditor", role="Auditor"))
    page = client.get(f"{KEYS}{key.pk}/change/").content.decode()
    assert "/rotate/" not in page and "/revoke/" not in page and "Rotate the secret" not in page
    listing = client.get(KEYS).content.decode()
    assert "Revoke the selected" not in listing and "Reset the quota counters" not in listing
    assert client.get(f"{KEYS}{key.pk}/rotate/").status_code == 403


def test_an_operator_is_offered_rotation_and_revocation(client):
    key, _ = make_key(name="billing-bot")
    client.force_login(make_user("operator", role="Operator"))
    page = client.get(f"{KEYS}{key.pk}/change/").content.decode()
    assert f'href="{KEYS}{key.pk}/rotate/"' in page and f'href="{KEYS}{key.pk}/revoke/"' in page
    assert "Revoke the selected keys" in client.get(KEYS).content.decode()


def test_an_admin_sees_and_revokes_everyones_management_tokens(client):
    admin = make_user("boss", role="Admin")
    other = make_user("ops", role="Operator")
    theirs, _ = ManagementToken.objects.issue(other, "deploy-script")
    client.force_login(admin)
    listing = client.get(TOKENS).content.decode()
    assert "deploy-script" in listing and f"gwm_{theirs.prefix}_…" in listing
    client.post(TOKENS, {"action": "revoke", "_selected_action": [theirs.pk]})
    theirs.refresh_from_db()
    assert theirs.revoked is not None
    entry = LogEntry.objects.get_for_object(theirs).latest("timestamp")
    assert entry.actor == admin and "revoked" in entry.changes_dict


@pytest.mark.parametrize("role", ["Operator", "Auditor"])
def test_other_roles_see_and_revoke_only_their_own_tokens(client, role):
    user = make_user("someone", role=role)
    mine, _ = ManagementToken.objects.issue(user, "my-laptop")
    theirs, _ = ManagementToken.objects.issue(make_user("boss", role="Admin"), "boss-token")
    client.force_login(user)
    listing = client.get(TOKENS).content.decode()
    assert "my-laptop" in listing and "boss-token" not in listing
    assert client.get(f"{TOKENS}{theirs.pk}/change/").status_code in (302, 403, 404)
    client.post(TOKENS, {"action": "revoke", "_selected_action": [mine.pk, theirs.pk]})
    mine.refresh_from_db()
    theirs.refresh_from_db()
    assert mine.revoked is not None and theirs.revoked is None
