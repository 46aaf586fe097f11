"""What a new admin hit in the admin (the browser side is in test_admin_browser.py)."""

import re

import pytest

from routes_admin import keys
from routes_admin.models import APIKey
from tests.factories import auth, make_key, make_route, make_user

pytestmark = pytest.mark.django_db


def test_admin_without_the_slash_redirects_to_the_admin(client):
    response = client.get("/admin")
    assert response.status_code == 302 and response["Location"] == "/admin/"


def test_a_refused_admin_page_is_the_admins_own_html_page(client):
    client.force_login(make_user("aude", "Auditor"))
    response = client.get("/admin/routes_admin/route/add/")
    assert response.status_code == 403
    assert response["Content-Type"].startswith("text/html")
    html = response.content.decode()
    assert "Not allowed" in html and "AI gateway" in html and "aude" in html


def test_an_unknown_admin_page_is_html_and_other_paths_keep_the_json_errors(client):
    client.force_login(make_user("ann", "Admin"))
    response = client.get("/admin/routes_admin/nothing/")
    assert response.status_code == 404 and response["Content-Type"].startswith("text/html")
    assert "AI gateway" in response.content.decode()
    response = client.get("/api/nothing")
    assert response.status_code == 404 and response.json()["error"]["type"] == "not_found"


def test_view_site_leads_to_the_first_steps_page(client):
    client.force_login(make_user("ann", "Admin"))
    index = client.get("/admin/").content.decode()
    assert 'href="/admin/first-steps/"' in index
    page = client.get("/admin/first-steps/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "curl http://testserver/v1/chat/completions" in html and "/admin/routes_admin/apikey/add/" in html
    client.logout()
    assert client.get("/admin/first-steps/").status_code == 302  # people only: to the login page


def test_a_key_without_routes_and_without_all_routes_is_refused(admin_client):
    response = admin_client.post("/admin/routes_admin/apikey/add/", {"name": "nowhere", "enabled": "on"})
    assert response.status_code == 200
    assert "Say which routes the key may call" in response.content.decode()
    assert not APIKey.objects.exists()

    key = APIKey.objects.issue(name="k", all_routes=True)[0]
    response = admin_client.post(f"/admin/routes_admin/apikey/{key.pk}/change/", {"name": "k", "enabled": "on"})
    assert response.status_code == 200 and "Say which routes the key may call" in response.content.decode()
    key.refresh_from_db()
    assert key.all_routes


def test_reloading_the_issued_page_issues_no_second_key_and_shows_the_secret_no_more(admin_client):
    route = make_route(name="chat")
    response = admin_client.post(
        "/admin/routes_admin/apikey/add/", {"name": "k", "enabled": "on", "routes": [route.pk]}
    )
    assert response.status_code == 302
    issued = response["Location"]
    first = admin_client.get(issued)
    assert "no-store" in first["Cache-Control"] and 'id="api-key-secret"' in first.content.decode()
    again = admin_client.get(issued)
    assert "no-store" in again["Cache-Control"]
    assert 'id="api-key-secret"' not in again.content.decode() and "shown once already" in again.content.decode()
    assert APIKey.objects.count() == 1
    assert "issued_keys" not in admin_client.session or not admin_client.session["issued_keys"]


def test_the_issued_page_shows_a_secret_only_to_the_session_that_issued_it(admin_client, client):
    route = make_route(name="chat")
    issued = admin_client.post("/admin/routes_admin/apikey/add/", {"name": "k", "enabled": "on", "routes": [route.pk]})
    client.force_login(make_user("otto", "Operator"))
    assert 'id="api-key-secret"' not in client.get(issued["Location"]).content.decode()
    assert 'id="api-key-secret"' in admin_client.get(issued["Location"]).content.decode()


def test_large_numbers_get_a_wide_input(admin_client):
    html = admin_client.get("/admin/routes_admin/route/add/").content.decode()
    assert re.search(r'<input[^>]+name="max_body_bytes"[^>]+class="vBigIntegerField"', html)
    html = admin_client.get("/admin/routes_admin/quotaplan/add/").content.decode()
    assert re.search(r'<input[^>]+name="requests_per_day"[^>]+class="vBigIntegerField"', html)


def test_rotating_a_key_in_the_admin_shows_the_new_secret_once_and_retires_the_old_one(admin_client, client, upstream):
    route = make_route(upstream.url, name="chat")
    key, old = make_key(routes=[route])
    change_page = admin_client.get(f"/admin/routes_admin/apikey/{key.pk}/change/").content.decode()
    assert f"/admin/routes_admin/apikey/{key.pk}/rotate/" in change_page

    response = admin_client.post(f"/admin/routes_admin/apikey/{key.pk}/rotate/", {"grace_minutes": "0"})
    assert response.status_code == 302  # to the issued page: a reload rotates nothing
    shown = admin_client.get(response["Location"])
    assert "no-store" in shown["Cache-Control"]
    new = re.search(r'id="api-key-secret"[^>]*>([^<]+)<', shown.content.decode()).group(1).strip()
    assert "shown once already" in admin_client.get(response["Location"]).content.decode()

    assert client.post("/v1/x", **auth(old)).status_code == 401
    answer = client.post("/v1/x", **auth(new))
    assert answer.status_code == 200
    key.refresh_from_db()
    assert key.rotated is not None and APIKey.objects.count() == 1


def test_a_grace_period_keeps_the_old_secret_working_and_a_bad_one_is_refused(admin_client, client, upstream):
    route = make_route(upstream.url, name="chat")
    key, old = make_key(routes=[route])
    refused = admin_client.post(f"/admin/routes_admin/apikey/{key.pk}/rotate/", {"grace_minutes": "soon"})
    assert refused.status_code == 200 and "whole minutes" in refused.content.decode()
    admin_client.post(f"/admin/routes_admin/apikey/{key.pk}/rotate/", {"grace_minutes": "30"})
    assert client.post("/v1/x", **auth(old)).status_code == 200


def test_an_auditor_cannot_rotate_a_key(client):
    key, old = make_key(all_routes=True)
    client.force_login(make_user("aude", "Auditor"))
    assert client.post(f"/admin/routes_admin/apikey/{key.pk}/rotate/", {"grace_minutes": "0"}).status_code == 403
    key.refresh_from_db()
    assert keys.matches(old, key.hashed_secret)
