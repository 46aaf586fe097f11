"""A key's secret, between the admin's POST and the page showing it once, is in the session row only
sealed (useless without SECRET_KEY and the page's URL), for minutes, and is gone once shown."""

import re

import pytest
from django.contrib.sessions.models import Session

from routes_admin import shown_once
from tests.factories import make_key, make_route

pytestmark = pytest.mark.django_db


def session_row(client) -> tuple[str, str]:
    """The django_session row as the database holds it, and as anyone reading it can decode it."""
    row = Session.objects.get(session_key=client.session.session_key)
    return row.session_data, repr(row.get_decoded())


def shown_secret(html: str) -> str:
    return re.search(r'id="api-key-secret"[^>]*>([^<]+)<', html).group(1).strip()


def assert_not_in_row(secret: str, stored: str, decoded: str, token: str) -> None:
    body = secret.split("_", 2)[-1]  # the random part, without the visible gw_<prefix>_
    assert len(body) >= 20
    for text in (stored, decoded):
        assert secret not in text and body[:12] not in text and body[-12:] not in text
        assert token not in text  # the URL's token, which the seal's key is derived from, is not stored


def test_a_key_issued_in_the_admin_waits_sealed_in_the_session_row_and_is_gone_once_shown(admin_client):
    route = make_route(name="chat")
    response = admin_client.post(
        "/admin/routes_admin/apikey/add/", {"name": "k", "enabled": "on", "routes": [route.pk]}
    )
    assert response.status_code == 302
    token = response["Location"].rstrip("/").rsplit("/", 1)[-1]
    stored, decoded = session_row(admin_client)
    assert shown_once.SESSION_KEY in decoded  # waiting, sealed

    secret = shown_secret(admin_client.get(response["Location"]).content.decode())
    assert secret.startswith("gw_")
    assert_not_in_row(secret, stored, decoded, token)

    stored, decoded = session_row(admin_client)
    assert shown_once.SESSION_KEY not in decoded or f"{shown_once.SESSION_KEY}': {{}}" in decoded
    assert 'id="api-key-secret"' not in admin_client.get(response["Location"]).content.decode()


def test_a_rotated_secret_waits_sealed_and_is_gone_once_shown(admin_client):
    key, _ = make_key(all_routes=True)
    response = admin_client.post(f"/admin/routes_admin/apikey/{key.pk}/rotate/", {"grace_minutes": "0"})
    assert response.status_code == 302
    token = response["Location"].rstrip("/").rsplit("/", 1)[-1]
    stored, decoded = session_row(admin_client)
    secret = shown_secret(admin_client.get(response["Location"]).content.decode())
    assert_not_in_row(secret, stored, decoded, token)
    assert f"{shown_once.SESSION_KEY}': {{}}" in session_row(admin_client)[1]


def test_the_seal_opens_only_with_its_token_and_this_secret_key(settings):
    session = {}
    token = shown_once.keep(session, 7, "gw_abcd1234_" + "s" * 40)
    (item,) = session[shown_once.SESSION_KEY].values()
    assert shown_once.unseal(token, item["box"]) == "gw_abcd1234_" + "s" * 40
    assert shown_once.unseal(token + "x", item["box"]) is None
    settings.SECRET_KEY = "another-secret-key"
    assert shown_once.unseal(token, item["box"]) is None


def test_a_waiting_secret_is_given_once_only_for_its_key_and_expires(settings):
    session = {}
    token = shown_once.keep(session, 7, "gw_first", now=1000.0)
    assert shown_once.take(session, 8, token, now=1001.0) is None  # another key's page: and it is spent
    token = shown_once.keep(session, 7, "gw_second", now=1000.0)
    assert shown_once.take(session, 7, token, now=1001.0) == "gw_second"
    assert shown_once.take(session, 7, token, now=1002.0) is None

    late = shown_once.keep(session, 7, "gw_late", now=1000.0)
    assert shown_once.take(session, 7, late, now=1000.0 + shown_once.SHOWN_ONCE_SECONDS + 1) is None
    shown_once.keep(session, 7, "gw_left", now=1000.0)
    shown_once.keep(session, 7, "gw_next", now=1000.0 + shown_once.SHOWN_ONCE_SECONDS + 1)
    assert len(session[shown_once.SESSION_KEY]) == 1  # the one past its time was dropped


def test_a_secret_stored_in_the_clear_by_an_older_version_is_dropped_unshown(admin_client):
    key, _ = make_key(all_routes=True)
    session = admin_client.session
    session[shown_once.SESSION_KEY] = {"oldtoken": {"key": key.pk, "secret": "gw_old_clear_secret"}}
    session.save()
    page = admin_client.get(f"/admin/routes_admin/apikey/{key.pk}/issued/oldtoken/").content.decode()
    assert "gw_old_clear_secret" not in page
    assert "gw_old_clear_secret" not in session_row(admin_client)[1]
