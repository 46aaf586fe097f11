"""The management API under /api/.

Roles (admin, operator, auditor) × models × list/create/update/delete; validation errors with
field messages and nothing half-saved; write-only credentials; keys issued, rotated and revoked;
the request log's cursor pages; management tokens.
"""

import json
from datetime import timedelta
from io import StringIO
from urllib.parse import quote

import pytest
from django.contrib.auth.models import Permission, User
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from routes_admin import keys
from routes_admin.models import APIKey, KeyUsage, ManagementToken, QuotaPlan, RequestLog, Route, UpstreamTarget
from tests.factories import auth, make_key, make_plan, make_route, make_target
from tests.roles import bearer, make_user, token_for
from tests.upstream import json_reply

pytestmark = pytest.mark.django_db


def send(client, method: str, path: str, token: str, body=None):
    kwargs = bearer(token)
    if body is not None:
        kwargs.update(data=json.dumps(body), content_type="application/json")
    return getattr(client, method)(path, **kwargs)


# --- The role matrix -----------------------------------------------------------------------------

unique = iter(range(10_000))


def new_payload(model: str) -> dict:
    n = next(unique)
    if model == "routes":
        return {"name": f"r{n}", "path_prefix": f"/p{n}", "targets": [{"url": "http://127.0.0.1:9/v1"}]}
    if model == "plans":
        return {"name": f"plan{n}", "requests_per_minute": 10}
    return {"name": f"key{n}", "all_routes": True}


def existing(model: str) -> int:
    n = next(unique)
    if model == "routes":
        return make_route(name=f"existing{n}", path_prefix=f"/e{n}").id
    if model == "plans":
        return make_plan(name=f"existing{n}").id
    return make_key(name=f"existing{n}", all_routes=True)[0].id


ALLOWED = {"list": 200, "create": 201, "update": 200, "delete": 204}
EXPECTED = {
    "admin": ALLOWED,
    "operator": ALLOWED,
    "auditor": {"list": 200, "create": 403, "update": 403, "delete": 403},
    "nobody": {"list": 403, "create": 403, "update": 403, "delete": 403},
}


@pytest.mark.parametrize("role", EXPECTED)
@pytest.mark.parametrize("model", ["routes", "plans", "keys"])
@pytest.mark.parametrize("operation", ["list", "create", "update", "delete"])
def test_role_matrix(client, role, model, operation):
    token = token_for(role)
    base = f"/api/{model}/"
    if operation == "list":
        response = send(client, "get", base, token)
    elif operation == "create":
        response = send(client, "post", base, token, new_payload(model))
    elif operation == "update":
        response = send(client, "patch", f"{base}{existing(model)}/", token, {"name": f"renamed{next(unique)}"})
    else:
        response = send(client, "delete", f"{base}{existing(model)}/", token)
    assert response.status_code == EXPECTED[role][operation], response.content
    if response.status_code == 403:
        assert response.json()["error"]["type"] == "permission_denied"


@pytest.mark.parametrize("role", EXPECTED)
@pytest.mark.parametrize("action", ["rotate", "revoke"])
def test_only_roles_that_may_change_keys_rotate_or_revoke_them(client, role, action):
    key, _ = make_key(all_routes=True)
    response = send(client, "post", f"/api/keys/{key.id}/{action}/", token_for(role), {})
    assert response.status_code == (200 if role in ("admin", "operator") else 403)
    key.refresh_from_db()
    changed = key.rotated is not None if action == "rotate" else key.revoked is not None
    assert changed == (role in ("admin", "operator"))


def test_rotating_needs_the_change_permission_not_the_add_one(client):
    user = make_user("nobody")
    user.user_permissions.set(Permission.objects.filter(codename__in=["view_apikey", "add_apikey"]))
    _, token = ManagementToken.objects.issue(user, "t")
    key, _ = make_key(all_routes=True)
    assert send(client, "post", f"/api/keys/{key.id}/rotate/", token, {}).status_code == 403
    assert send(client, "post", "/api/keys/", token, {"name": "k", "all_routes": True}).status_code == 201


@pytest.mark.parametrize("role", EXPECTED)
@pytest.mark.parametrize("path", ["/api/logs/", "/api/usage/", "/api/history/"])
def test_records_are_read_only_for_every_role(client, role, path):
    token = token_for(role)
    assert send(client, "get", path, token).status_code == (403 if role == "nobody" else 200)
    assert send(client, "post", path, token, {}).status_code in (403, 405)


def test_without_credentials_the_api_answers_401_in_the_json_shape(client):
    response = client.get("/api/routes/")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Bearer realm="api"'
    assert set(response.json()["error"]) == {"type", "message", "request_id"}


# --- Validation: 400 with field messages, nothing half-saved --------------------------------------


@pytest.fixture
def operator():
    return token_for("operator")


def test_a_route_is_made_with_its_job_settings(client, operator):
    body = {"name": "batch", "path_prefix": "/batch", "processing_mode": "async", "max_concurrent_jobs": 2}
    response = send(client, "post", "/api/routes/", operator, body)
    assert response.status_code == 201
    assert (response.json()["processing_mode"], response.json()["max_concurrent_jobs"]) == ("async", 2)
    route = Route.objects.get(name="batch")
    assert (route.processing_mode, route.max_concurrent_jobs) == ("async", 2)


def test_a_reserved_prefix_is_a_400_with_the_fields_message(client, operator):
    response = send(client, "post", "/api/routes/", operator, {"name": "bad", "path_prefix": "/admin/x"})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["fields"] == {"path_prefix": ["/admin is reserved for the gateway itself."]}
    assert not Route.objects.exists()


def test_an_invalid_target_saves_neither_the_route_nor_its_other_targets(client, operator):
    body = {
        "name": "r",
        "path_prefix": "/v1",
        "targets": [{"url": "http://127.0.0.1:9000/v1"}, {"url": "http://169.254.169.254/latest"}],
    }
    response = send(client, "post", "/api/routes/", operator, body)
    assert response.status_code == 400
    fields = response.json()["error"]["fields"]
    assert fields["targets"][0] == {}
    assert "url" in fields["targets"][1]
    assert not Route.objects.exists() and not UpstreamTarget.objects.exists()


def test_a_failed_update_leaves_the_route_and_its_targets_as_they_were(client, operator):
    route = make_route("http://127.0.0.1:9000/v1", name="r")
    target = route.targets.get()
    body = {"name": "renamed", "targets": [{"id": target.id, "url": "ftp://example.com/"}]}
    response = send(client, "patch", f"/api/routes/{route.id}/", operator, body)
    assert response.status_code == 400
    assert "url" in response.json()["error"]["fields"]["targets"][0]
    route.refresh_from_db()
    assert route.name == "r"
    assert list(route.targets.values_list("id", "url")) == [(target.id, "http://127.0.0.1:9000/v1")]


def test_a_write_the_database_refuses_midway_is_a_400_and_saves_nothing(client, operator):
    # Swapping two targets' names passes validation, then the per-route unique name refuses the
    # first rename after the route itself was saved: the whole write must roll back.
    route = make_route(name="r")
    a, b = make_target(route, "http://127.0.0.1:1/", name="a"), make_target(route, "http://127.0.0.1:2/", name="b")
    body = {"name": "renamed", "targets": [{"id": a.id, "name": "b"}, {"id": b.id, "name": "a"}]}
    response = send(client, "patch", f"/api/routes/{route.id}/", operator, body)
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"
    route.refresh_from_db()
    assert route.name == "r"
    assert sorted(route.targets.values_list("id", "name")) == [(a.id, "a"), (b.id, "b")]


def test_two_targets_with_one_name_are_a_400_not_a_500(client, operator):
    body = {
        "name": "r",
        "path_prefix": "/v1",
        "targets": [{"url": "http://127.0.0.1:1/"}, {"url": "http://127.0.0.1:1/"}],
    }
    response = send(client, "post", "/api/routes/", operator, body)
    assert response.status_code == 400
    assert "name" in response.json()["error"]["fields"]["targets"][1]


def test_a_key_needs_routes_or_all_routes(client, operator):
    response = send(client, "post", "/api/keys/", operator, {"name": "k"})
    assert response.status_code == 400
    assert "routes" in response.json()["error"]["fields"]
    assert not APIKey.objects.exists()


def test_an_unknown_id_is_a_json_404(client, operator):
    response = send(client, "get", "/api/routes/999/", operator)
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "not_found"


@pytest.mark.parametrize("method", ["post", "delete"])
def test_an_unknown_api_path_is_a_json_404_whatever_the_method(operator, method):
    # Found by schemathesis: a write to an unknown path got the CSRF check's HTML 403.
    response = send(Client(enforce_csrf_checks=True), method, "/api/keys/1.5e-9/", operator)
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "not_found"


@pytest.mark.parametrize("query", ["routes=99999999999999999999999", "quota_plan=-99999999999999999999999"])
def test_a_filter_number_too_large_for_the_database_is_a_400(client, operator, query):
    # Found by schemathesis: an id filter past 64 bits overflowed the database driver (500).
    response = send(client, "get", f"/api/keys/?{query}", operator)
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize("moment", ["0858-08-26T05:25:52-20:38", "0001-01-01T00:00:00+05:00"])
def test_a_time_filter_with_an_offset_postgresql_refuses_is_handled(client, operator, moment):
    # Found by schemathesis on PostgreSQL: an offset past ±15:59 (valid ISO 8601) was a 500.
    response = send(client, "get", f"/api/logs/?created_after={quote(moment)}", operator)
    assert response.status_code in (200, 400)
    assert response.json().get("results") == [] or response.json()["error"]["type"] == "invalid_request_error"


def test_a_body_that_is_not_json_is_a_json_400(client, operator):
    response = client.post("/api/plans/", "{nope", content_type="application/json", **bearer(operator))
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


# --- Targets: nested writes and write-only credentials ---------------------------------------------


def test_credentials_are_write_only_and_kept_when_left_out(client, operator):
    body = {
        "name": "r",
        "path_prefix": "/v1",
        "targets": [{"name": "t", "url": "http://127.0.0.1:9/v1", "credential_header": "Authorization"}],
    }
    body["targets"][0]["credential_value"] = "Bearer sk-live-0123456789abcd"
    created = send(client, "post", "/api/routes/", operator, body)
    assert created.status_code == 201
    assert "sk-live" not in created.content.decode()
    assert created.json()["targets"][0]["credential"] == "****abcd"
    route_id, target_id = created.json()["id"], created.json()["targets"][0]["id"]
    assert "sk-live" not in send(client, "get", f"/api/routes/{route_id}/", operator).content.decode()
    assert "sk-live" not in send(client, "get", "/api/routes/", operator).content.decode()

    # Updating the target without its credential keeps the stored one (same scheme, host and port).
    update = {"targets": [{"id": target_id, "url": "http://127.0.0.1:9/v2"}]}
    assert send(client, "patch", f"/api/routes/{route_id}/", operator, update).status_code == 200
    target = UpstreamTarget.objects.get()
    assert (target.id, target.url, target.credential_value) == (
        target_id,
        "http://127.0.0.1:9/v2",
        "Bearer sk-live-0123456789abcd",
    )


def test_a_targets_list_replaces_the_routes_targets(client, operator):
    route = make_route(name="r")
    keep = make_target(route, "http://127.0.0.1:1/", name="keep")
    make_target(route, "http://127.0.0.1:2/", name="drop")
    update = {"targets": [{"id": keep.id, "weight": 5}, {"name": "new", "url": "http://127.0.0.1:3/"}]}
    assert send(client, "patch", f"/api/routes/{route.id}/", operator, update).status_code == 200
    assert sorted(route.targets.values_list("name", "weight")) == [("keep", 5), ("new", 1)]


# --- Keys: issue, rotate, revoke, usage ------------------------------------------------------------


def test_an_issued_key_is_shown_once_with_no_store_and_works(client, operator, upstream):
    upstream.reply = json_reply({"ok": True})
    route = make_route(upstream.url, name="r")
    response = send(client, "post", "/api/keys/", operator, {"name": "k", "routes": [route.id]})
    assert response.status_code == 201
    assert response["Cache-Control"] == "no-store"
    secret = response.json()["secret"]
    key = APIKey.objects.get()
    assert key.hashed_secret == keys.hash_key(secret)
    assert response.json()["prefix"] == f"gw_{key.prefix}_…"
    assert secret not in send(client, "get", f"/api/keys/{key.id}/", operator).content.decode()
    assert "secret" not in send(client, "get", "/api/keys/", operator).json()["results"][0]
    assert client.post("/v1/x", b"{}", content_type="application/json", **auth(secret)).status_code == 200


def test_rotate_through_the_api_with_a_grace_period(client, operator, upstream):
    upstream.reply = json_reply({"ok": True})
    route = make_route(upstream.url, name="r")
    key, old = make_key(routes=[route], requests_per_day=50)
    response = send(client, "post", f"/api/keys/{key.id}/rotate/", operator, {"grace_seconds": 3600})
    assert response.status_code == 200
    assert response["Cache-Control"] == "no-store"
    new = response.json()["secret"]
    assert response.json()["requests_per_day"] == 50 and response.json()["routes"] == [route.id]
    for secret in (old, new):
        assert client.post("/v1/x", b"{}", content_type="application/json", **auth(secret)).status_code == 200
    assert send(client, "post", f"/api/keys/{key.id}/rotate/", operator, {"grace_seconds": -1}).status_code == 400


def test_revoke_through_the_api(client, operator):
    key, secret = make_key(all_routes=True)
    response = send(client, "post", f"/api/keys/{key.id}/revoke/", operator, {})
    assert response.status_code == 200 and response.json()["revoked"]
    assert client.post("/v1/x", **auth(secret)).json()["error"]["message"] == "The API key has been revoked."


def test_key_usage_today_and_this_month_against_its_limits(client, operator):
    key, _ = make_key(all_routes=True, tokens_per_day=1000, tokens_per_month=20000)
    today = timezone.localdate()
    KeyUsage.objects.create(api_key=key, day=today, requests=3, total_tokens=120)
    if today.day > 1:
        KeyUsage.objects.create(api_key=key, day=today.replace(day=1), requests=2, total_tokens=80)
    earlier = today.replace(day=1) - timedelta(days=1)
    KeyUsage.objects.create(api_key=key, day=earlier, requests=9, total_tokens=900)
    body = send(client, "get", f"/api/keys/{key.id}/usage/", operator).json()
    assert body["today"] == {"requests": 3, "total_tokens": 120, "tokens_limit": 1000}
    month = (5, 200) if today.day > 1 else (3, 120)
    assert body["this_month"] == {"requests": month[0], "total_tokens": month[1], "tokens_limit": 20000}
    assert {q["name"] for q in body["live"]} == {"tokens_per_day", "tokens_per_month"}


# --- Request log: filters and cursor pages ----------------------------------------------------------


def test_the_request_log_pages_by_cursor_and_filters(client):
    auditor = token_for("auditor")
    now = timezone.now()
    for i in range(5):
        RequestLog.objects.create(
            created=now - timedelta(seconds=i), request_id=f"r{i}", method="POST", path="/v1/x", status=200 + i * 100,
            latency_ms=1,
        )  # fmt: skip
    seen, url = [], "/api/logs/?page_size=2"
    while url:
        page = send(client, "get", url, auditor).json()
        seen += [row["request_id"] for row in page["results"]]
        url = page["next"]
    assert seen == ["r0", "r1", "r2", "r3", "r4"]
    failures = send(client, "get", "/api/logs/?status_min=400", auditor).json()["results"]
    assert [row["request_id"] for row in failures] == ["r2", "r3", "r4"]


# --- Management tokens -------------------------------------------------------------------------------


def test_a_token_is_stored_as_a_hash_and_revoked_ones_are_refused(client):
    user = make_user("operator")
    token, secret = ManagementToken.objects.issue(user, "ci")
    assert secret.startswith(f"gwm_{token.prefix}_")
    assert token.hashed_secret == keys.hash_key(secret) and secret not in token.hashed_secret
    assert send(client, "get", "/api/routes/", secret).status_code == 200
    token.revoked = timezone.now()
    token.save()
    refused = send(client, "get", "/api/routes/", secret)
    assert refused.status_code == 401
    assert refused.json()["error"]["type"] == "invalid_api_key"


def test_a_token_of_an_inactive_user_or_an_unknown_token_is_refused(client):
    user = make_user("admin")
    _, secret = ManagementToken.objects.issue(user, "ci")
    User.objects.filter(pk=user.pk).update(is_active=False)
    assert send(client, "get", "/api/routes/", secret).status_code == 401
    assert send(client, "get", "/api/routes/", secret[:-1] + "x").status_code == 401
    # A gateway key is not a management token.
    _, key = make_key(all_routes=True)
    assert send(client, "get", "/api/routes/", key).status_code == 401


def test_tokens_are_created_once_through_the_api_and_revoked_by_delete(client):
    first = token_for("auditor")
    response = send(client, "post", "/api/tokens/", first, {"name": "second"})
    assert response.status_code == 201 and response["Cache-Control"] == "no-store"
    second = response.json()["token"]
    listed = send(client, "get", "/api/tokens/", second).json()["results"]
    assert sorted(t["name"] for t in listed) == ["second", "tests"] and "token" not in listed[0]
    # The new token has its user's role: an auditor's cannot change anything.
    assert send(client, "post", "/api/plans/", second, {"name": "p"}).status_code == 403
    assert send(client, "delete", f"/api/tokens/{response.json()['id']}/", first).status_code == 204
    assert send(client, "get", "/api/tokens/", second).status_code == 401


def test_a_user_sees_only_their_own_tokens(client):
    other = ManagementToken.objects.issue(make_user("admin"), "theirs")[0]
    mine = token_for("admin")
    assert [t["name"] for t in send(client, "get", "/api/tokens/", mine).json()["results"]] == ["tests"]
    assert send(client, "delete", f"/api/tokens/{other.id}/", mine).status_code == 404


def test_create_token_command_prints_the_token_once(client):
    make_user("auditor")
    out = StringIO()
    call_command("create_token", User.objects.get().username, "--name", "script", stdout=out)
    secret = out.getvalue().strip().splitlines()[-1]
    assert ManagementToken.objects.get().hashed_secret == keys.hash_key(secret)
    assert send(client, "get", "/api/keys/", secret).status_code == 200


def test_a_session_works_and_needs_the_csrf_token_to_write():
    user = make_user("operator")
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(user)
    assert browser.get("/api/plans/").status_code == 200
    refused = browser.post("/api/plans/", {"name": "p"}, content_type="application/json")
    assert refused.status_code == 403 and "CSRF" in refused.json()["error"]["message"]
    assert not QuotaPlan.objects.exists()
    browser.get("/admin/login/")  # sets the CSRF cookie
    csrf = browser.cookies["csrftoken"].value
    accepted = browser.post("/api/plans/", {"name": "p"}, content_type="application/json", HTTP_X_CSRFTOKEN=csrf)
    assert accepted.status_code == 201
