"""The change history through the management API (/api/history/):
who changed what, when, from where, before and after; read-only for every role; secrets masked."""

import json
from io import StringIO

import pytest
from auditlog.models import LogEntry
from django.core.management import call_command

from routes_admin.models import APIKey, ManagementToken
from tests.factories import make_key, make_route
from tests.roles import bearer, make_user, token_for

pytestmark = pytest.mark.django_db


def send(client, method: str, path: str, token: str, body=None):
    kwargs = bearer(token)
    if body is not None:
        kwargs.update(data=json.dumps(body), content_type="application/json")
    return getattr(client, method)(path, **kwargs)


def test_an_auditor_finds_an_operators_change_with_who_where_and_before_after(client):
    route = make_route(name="chat", priority=0)
    operator = make_user("operator")
    _, operator_token = ManagementToken.objects.issue(operator, "ops")
    changed = send(client, "patch", f"/api/routes/{route.id}/", operator_token, {"priority": 5})
    assert changed.status_code == 200

    auditor = token_for("auditor")
    found = send(client, "get", f"/api/history/?model=routes_admin.route&object_pk={route.id}", auditor).json()
    update = next(entry for entry in found["results"] if entry["action"] == "update")
    assert update["who"] == operator.username and update["actor"] == operator.id
    assert update["remote_addr"] == "127.0.0.1"
    assert update["changes"]["priority"] == ["0", "5"]
    assert update["object_repr"] == "chat"
    by_user = send(client, "get", f"/api/history/?actor={operator.id}", auditor).json()["results"]
    assert [entry["id"] for entry in by_user] == [update["id"]]


@pytest.mark.parametrize("role", ["admin", "operator", "auditor"])
def test_no_role_can_add_edit_or_delete_an_entry(client, role):
    entry = LogEntry.objects.get_for_object(make_route(name="r")).get()
    token = token_for(role)
    assert send(client, "get", f"/api/history/{entry.id}/", token).status_code == 200
    assert send(client, "post", "/api/history/", token, {"object_repr": "forged"}).status_code in (403, 405)
    for method in ("put", "patch"):
        assert send(client, method, f"/api/history/{entry.id}/", token, {"object_repr": "x"}).status_code in (403, 405)
    assert send(client, "delete", f"/api/history/{entry.id}/", token).status_code in (403, 405)
    entry.refresh_from_db()
    assert entry.object_repr == "r" and LogEntry.objects.filter(object_repr="forged").count() == 0


def test_without_a_role_the_history_is_refused(client):
    assert send(client, "get", "/api/history/", token_for("nobody")).status_code == 403


def test_a_rotation_is_recorded_with_both_hashes_masked(client):
    key, old = make_key(all_routes=True)
    response = send(client, "post", f"/api/keys/{key.id}/rotate/", token_for("operator"), {"grace_seconds": 60})
    new = response.json()["secret"]
    key.refresh_from_db()
    entries = send(client, "get", f"/api/history/?model=routes_admin.apikey&object_pk={key.id}", token_for("auditor"))
    text = entries.content.decode()
    rotation = next(entry for entry in entries.json()["results"] if "previous_hashed_secret" in entry["changes"])
    assert rotation["changes"]["hashed_secret"] == ["(hidden)", "(hidden)"]
    assert rotation["changes"]["previous_hashed_secret"][1] == "(hidden)"
    for secret in (old, new, key.hashed_secret, key.previous_hashed_secret):
        assert secret not in text


def test_apply_config_is_recorded_as_the_command(client, tmp_path):
    route = make_route(name="chat", read_timeout=300)
    out = StringIO()
    call_command("export_config", stdout=out, stderr=StringIO())
    path = tmp_path / "gateway.yaml"
    path.write_text(out.getvalue().replace("read_timeout: 300.0", "read_timeout: 30.0"))
    call_command("apply_config", str(path), "--yes", stdout=StringIO())
    entries = send(client, "get", f"/api/history/?model=routes_admin.route&object_pk={route.id}", token_for("auditor"))
    update = next(entry for entry in entries.json()["results"] if entry["action"] == "update")
    assert update["who"] == "manage.py apply_config"
    assert update["changes"]["read_timeout"] == ["300.0", "30.0"]


def test_rotate_key_command_is_recorded_as_the_command():
    key, _ = make_key(all_routes=True)
    call_command("rotate_key", key.prefix, stdout=StringIO())
    entry = LogEntry.objects.get_for_object(APIKey.objects.get()).filter(action=LogEntry.Action.UPDATE).get()
    assert entry.additional_data == {"command": "rotate_key"}
