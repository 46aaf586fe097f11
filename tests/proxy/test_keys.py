"""Keys are accepted in two headers, and only their hash is ever stored."""

import logging
import re
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection

from routes_admin import keys
from routes_admin.models import APIKey
from tests.factories import make_key, make_route
from tests.upstream import json_reply

pytestmark = pytest.mark.django_db


@pytest.fixture
def route(upstream):
    upstream.reply = json_reply({"ok": True, "usage": {"prompt_tokens": 1, "completion_tokens": 1}})
    return make_route(upstream.url)


def call(client, **headers):
    response = client.post("/v1/chat/completions", b'{"model": "m"}', content_type="application/json", **headers)
    if response.streaming:
        b"".join(response.streaming_content)
    return response


def test_bearer_key_is_accepted(client, route):
    _, secret = make_key(routes=[route])
    assert call(client, HTTP_AUTHORIZATION=f"Bearer {secret}").status_code == 200


def test_bearer_scheme_is_case_insensitive(client, route):
    _, secret = make_key(routes=[route])
    assert call(client, HTTP_AUTHORIZATION=f"bearer {secret}").status_code == 200


def test_x_api_key_is_accepted(client, route):
    _, secret = make_key(routes=[route])
    assert call(client, HTTP_X_API_KEY=secret).status_code == 200


def test_an_all_routes_key_may_call_a_route_made_after_it(client, upstream):
    _, secret = make_key(all_routes=True)
    make_route(upstream.url, name="later")
    assert call(client, HTTP_X_API_KEY=secret).status_code == 200


def test_a_key_is_found_by_its_prefix_and_checked_by_hash():
    key, secret = APIKey.objects.issue(name="k")
    assert secret.startswith(f"gw_{key.prefix}_")
    assert key.hashed_secret == keys.hash_key(secret) and len(key.hashed_secret) == 64
    assert APIKey.objects.for_secret(secret) == key
    assert APIKey.objects.for_secret(secret + "x") is None
    assert APIKey.objects.for_secret(f"gw_{key.prefix}_wrong") is None


def every_stored_text() -> str:
    """Every value of every row of every table, as text."""
    parts = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names(cursor):
            cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")
            parts.extend(repr(row) for row in cursor.fetchall())
    return "\n".join(parts)


def assert_secret_not_stored(secret: str) -> None:
    random_part = secret.split("_", 2)[2]
    stored = every_stored_text()
    assert secret not in stored
    assert random_part not in stored
    assert keys.hash_key(secret) in stored  # what is stored instead


def test_a_key_issued_by_the_manager_is_stored_only_as_a_hash(client, route, caplog):
    _, secret = make_key(routes=[route])
    with caplog.at_level(logging.DEBUG):
        call(client, HTTP_AUTHORIZATION=f"Bearer {secret}")
        call(client, HTTP_X_API_KEY=secret)
        call(client, HTTP_X_API_KEY=secret + "-wrong")
    assert_secret_not_stored(secret)
    assert secret.split("_", 2)[2] not in caplog.text  # nor logged


def test_a_key_issued_by_the_command_is_stored_only_as_a_hash(client, route):
    out = StringIO()
    call_command("issue_key", "--name", "cli", "--route", route.name, stdout=out)
    secret = out.getvalue().strip().splitlines()[-1]
    assert call(client, HTTP_X_API_KEY=secret).status_code == 200
    assert_secret_not_stored(secret)


def test_a_key_issued_in_the_admin_is_shown_once_and_stored_only_as_a_hash(admin_client, client, route):
    response = admin_client.post(
        "/admin/routes_admin/apikey/add/",
        {"name": "from-admin", "owner": "team a", "enabled": "on", "routes": [route.id]},
        follow=True,
    )
    assert response.status_code == 200, response.content[:2000]
    [(issued_url, status)] = response.redirect_chain  # redirected after the POST: a reload issues nothing
    assert status == 302
    assert "no-store" in response["Cache-Control"]
    html = response.content.decode()
    found = re.search(r'id="api-key-secret"[^>]*>([^<]+)<', html)
    assert found, html[:3000]
    secret = found.group(1).strip()
    assert html.count(secret) == 1
    key = APIKey.objects.get(name="from-admin")
    assert list(key.routes.all()) == [route]
    assert secret.startswith(f"gw_{key.prefix}_")
    assert call(client, HTTP_AUTHORIZATION=f"Bearer {secret}").status_code == 200

    # Never again: not on a reload of that page, not on the key's page, not in the list.
    random_part = secret.split("_", 2)[2]
    for page in (
        issued_url,
        f"/admin/routes_admin/apikey/{key.pk}/change/",
        "/admin/routes_admin/apikey/",
        "/admin/routes_admin/requestlog/",
    ):
        shown = admin_client.get(page)
        assert shown.status_code == 200
        assert random_part not in shown.content.decode()
    assert_secret_not_stored(secret)


def test_the_admin_cannot_set_a_keys_prefix_or_hash(admin_client, route):
    admin_client.post(
        "/admin/routes_admin/apikey/add/",
        {"name": "sneaky", "enabled": "on", "all_routes": "on", "prefix": "aaaaaaaa", "hashed_secret": "0" * 64},
    )
    key = APIKey.objects.get(name="sneaky")
    assert key.prefix != "aaaaaaaa" and key.hashed_secret != "0" * 64
