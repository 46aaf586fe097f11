"""Who may read the management API's schema and docs page: a signed-in user or a management
token, or anyone when GATEWAY_API_DOCS_PUBLIC is on."""

import pytest

from tests.roles import bearer, make_user, token_for

pytestmark = pytest.mark.django_db


def test_a_stranger_gets_the_json_401_for_the_schema(client):
    answer = client.get("/api/schema/")
    assert answer.status_code == 401
    assert answer["Content-Type"] == "application/json"
    assert answer.json()["error"]["type"] == "invalid_api_key"
    assert "paths" not in answer.content.decode()


def test_a_stranger_on_the_docs_page_is_sent_to_the_sign_in(client):
    answer = client.get("/api/docs/")
    assert answer.status_code == 302
    assert answer["Location"] == "/admin/login/?next=/api/docs/"


def test_a_wrong_token_is_refused_on_both(client):
    for path in ("/api/schema/", "/api/docs/"):
        answer = client.get(path, **bearer("gwm_nothing_like_a_token"))
        assert answer.status_code == 401
        assert answer.json()["error"]["type"] == "invalid_api_key"


def test_a_management_token_reads_both(client):
    secret = token_for("auditor")
    assert client.get("/api/schema/", **bearer(secret)).status_code == 200
    assert client.get("/api/docs/", **bearer(secret)).status_code == 200


def test_a_signed_in_user_reads_both(client):
    client.force_login(make_user("auditor"))
    schema = client.get("/api/schema/")
    assert schema.status_code == 200
    assert b"/api/routes/" in schema.content
    assert client.get("/api/docs/").status_code == 200


def test_the_setting_makes_both_public(client, settings):
    settings.GATEWAY_API_DOCS_PUBLIC = True
    assert client.get("/api/schema/").status_code == 200
    assert client.get("/api/docs/").status_code == 200
