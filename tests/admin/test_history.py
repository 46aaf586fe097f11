"""Every change to the configuration and to people is in an append-only history.

Who (user or command), when, from which address (the real one behind trusted proxies), and the
fields before and after, with secrets masked.
"""

import base64
import json
from io import StringIO

import pytest
from auditlog.models import LogEntry
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.contrib.contenttypes.models import ContentType
from django.core.management import call_command
from django.db import DatabaseError, connection, transaction

from routes_admin import history
from routes_admin.models import APIKey, Route, UpstreamTarget
from tests.admin_forms import form_values
from tests.factories import auth, make_key, make_route, make_user
from tests.upstream import json_reply

pytestmark = pytest.mark.django_db

User = get_user_model()
CREDENTIAL = "Bearer sk-upstream-0123456789-SECRET-wxyz"


def entries_for(obj):
    return list(LogEntry.objects.get_for_object(obj).order_by("timestamp", "pk"))


def every_entry_as_text() -> str:
    return json.dumps(list(LogEntry.objects.values()), default=str)


@pytest.fixture
def operator(client):
    user = make_user("otto", "Operator")
    client.force_login(user)
    return user


ROUTE_FORM = {
    "name": "chat",
    "path_prefix": "/v1",
    "methods": "GET,POST",
    "model_names": "",
    "match_headers": "{}",
    "match_body": "{}",
    "priority": "0",
    "strategy": "weighted",
    "connect_timeout": "5",
    "read_timeout": "300",
    "max_body_bytes": "1000",
    "max_attempts": "3",
    "retry_statuses": "502",
    "processing_mode": "sync",
    "enabled": "on",
    "targets-TOTAL_FORMS": "1",
    "targets-INITIAL_FORMS": "0",
    "targets-MIN_NUM_FORMS": "0",
    "targets-MAX_NUM_FORMS": "1000",
    "targets-0-name": "a",
    "targets-0-url": "http://127.0.0.1:9/v1",
    "targets-0-weight": "1",
    "targets-0-position": "0",
    "targets-0-enabled": "on",
    "targets-0-credential_header": "Authorization",
    "targets-0-credential_value": CREDENTIAL,
    "targets-0-model_aliases": "{}",
}


def test_an_operators_changes_in_the_admin_name_them_their_real_address_and_before_and_after(
    client, operator, settings
):
    settings.TRUSTED_PROXY_COUNT = 1  # one load balancer in front: the client is the last X-Forwarded-For hop
    behind_proxy = {"REMOTE_ADDR": "10.0.0.2", "HTTP_X_FORWARDED_FOR": "198.51.100.1, 203.0.113.7"}

    assert client.post("/admin/routes_admin/route/add/", ROUTE_FORM, **behind_proxy).status_code == 302
    route = Route.objects.get(name="chat")
    page = client.get(f"/admin/routes_admin/route/{route.pk}/change/").content.decode()
    data = form_values(page, "route_form")
    data["priority"] = "7"
    assert client.post(f"/admin/routes_admin/route/{route.pk}/change/", data, **behind_proxy).status_code == 302

    created, updated = entries_for(route)
    assert (created.action, updated.action) == (LogEntry.Action.CREATE, LogEntry.Action.UPDATE)
    for entry in (created, updated):
        assert entry.actor == operator and entry.remote_addr == "203.0.113.7"
        assert history.author(entry) == "otto"
    assert created.changes_dict["path_prefix"] == ["None", "/v1"]
    assert updated.changes_dict == {"priority": ["0", "7"]}  # only what changed

    # The target's credential: masked, never in full, anywhere in the history.
    [target_created] = entries_for(route.targets.get())
    assert target_created.changes_dict["credential_value"] == ["None", "****wxyz"]
    assert target_created.actor == operator
    text = every_entry_as_text()
    assert CREDENTIAL not in text and "0123456789" not in text

    # The entry's page shows the before and after; "History" on the route's page leads to it.
    entry_page = client.get(f"/admin/auditlog/logentry/{updated.pk}/change/").content.decode()
    assert "Priority" in entry_page and "203.0.113.7" in entry_page and "otto" in entry_page
    history_link = client.get(f"/admin/routes_admin/route/{route.pk}/history/")
    assert history_link.status_code == 302
    listing = client.get(history_link["Location"]).content.decode()
    assert f"/admin/auditlog/logentry/{updated.pk}/change/" in listing
    assert f"/admin/auditlog/logentry/{target_created.pk}/change/" not in listing  # this object's only

    assert client.post(f"/admin/routes_admin/route/{route.pk}/delete/", {"post": "yes"}).status_code == 302
    deleted = LogEntry.objects.filter(object_id=route.pk, content_type__model="route").latest("timestamp")
    assert deleted.action == LogEntry.Action.DELETE and deleted.actor == operator


def test_a_key_issued_in_the_admin_records_its_routes_and_never_its_hash(client, operator):
    route = make_route(name="chat")
    client.post("/admin/routes_admin/apikey/add/", {"name": "k", "enabled": "on", "routes": [route.pk]})
    key = APIKey.objects.get(name="k")
    created, routes_added = entries_for(key)
    assert created.changes_dict["hashed_secret"] == ["None", "(hidden)"]
    assert created.changes_dict["prefix"] == ["None", key.prefix]
    assert routes_added.changes_dict["routes"] == {"type": "m2m", "operation": "add", "objects": ["chat"]}
    assert routes_added.actor == operator
    assert key.hashed_secret not in every_entry_as_text()


def test_commands_are_named_as_the_actor():
    route = make_route(name="chat")
    out = StringIO()
    call_command("issue_key", "--name", "cli", "--route", "chat", stdout=out)
    secret = out.getvalue().splitlines()[-1]
    key = APIKey.objects.get(name="cli")
    created, routes_added = entries_for(key)
    for entry in (created, routes_added):
        assert entry.actor is None and entry.additional_data == {"command": "issue_key"}
        assert history.author(entry) == "manage.py issue_key"
    assert secret not in every_entry_as_text() and key.hashed_secret not in every_entry_as_text()
    assert entries_for(route)[0].additional_data is None  # made before the command: no author


def test_a_plain_save_is_recorded_too():
    route = make_route(name="chat")
    route.read_timeout = 12.5
    route.save()
    created, updated = entries_for(route)
    assert updated.changes_dict == {"read_timeout": ["300.0", "12.5"]}
    assert history.author(updated) == "system (no user)"


def test_users_their_passwords_and_group_memberships(client, monkeypatch):
    monkeypatch.setenv("PW", "a long and uncommon passphrase 7")
    call_command("create_user", "aude", "--role", "Auditor", "--password-from-env", "PW", stdout=StringIO())
    aude = User.objects.get(username="aude")
    created, joined = entries_for(aude)
    assert created.changes_dict["password"] == ["None", "(hidden)"]
    assert joined.changes_dict["groups"]["objects"] == ["Auditor"]
    assert history.author(created) == "manage.py create_user"
    assert aude.password not in every_entry_as_text()

    # An admin moves her to Operator in the admin.
    admin = make_user("ann", "Admin")
    client.force_login(admin)
    page = client.get(f"/admin/auth/user/{aude.pk}/change/").content.decode()
    data = form_values(page, "user_form")
    data["groups"] = [str(Group.objects.get(name="Operator").pk)]
    assert client.post(f"/admin/auth/user/{aude.pk}/change/", data).status_code == 302
    moved = [e for e in entries_for(aude)[2:] if "groups" in e.changes_dict]
    assert {(e.changes_dict["groups"]["operation"], *e.changes_dict["groups"]["objects"]) for e in moved} == {
        ("delete", "Auditor"),
        ("add", "Operator"),
    }
    assert all(e.actor == admin for e in moved)

    # What a role may do is recorded too.
    Group.objects.get(name="Auditor").permissions.clear()
    assert LogEntry.objects.filter(content_type__model="group", changes__icontains="permissions").exists()


def test_an_entry_still_names_a_user_who_was_deleted(client):
    ann = make_user("ann", "Admin")
    client.force_login(ann)
    client.post("/admin/routes_admin/route/add/", ROUTE_FORM)
    [entry] = entries_for(Route.objects.get())
    User.objects.get(username="ann").delete()  # on PostgreSQL the trigger lets exactly this through
    entry.refresh_from_db()
    assert entry.actor is None and history.author(entry) == "ann (user since deleted)"


def test_the_proxy_writes_no_history(client, upstream):
    upstream.reply = json_reply({"ok": True})
    route = make_route(upstream.url)
    _, secret = make_key(routes=[route])
    before = LogEntry.objects.count()
    response = client.post("/v1/chat/completions", b"{}", content_type="application/json", **auth(secret))
    if response.streaming:
        b"".join(response.streaming_content)
    assert response.status_code == 200
    assert LogEntry.objects.count() == before


# --- Append-only -------------------------------------------------------------------------------


@pytest.fixture
def entry():
    make_route(name="chat")
    return LogEntry.objects.latest("pk")


@pytest.mark.parametrize("role", ["superuser", "Admin", "Operator", "Auditor"])
def test_nobody_can_add_change_or_delete_an_entry_in_the_admin(client, entry, role):
    if role == "superuser":
        client.force_login(User.objects.create_superuser("root", password="x"))
    else:
        client.force_login(make_user("someone", role))
    base = "/admin/auditlog/logentry/"
    page = client.get(f"{base}{entry.pk}/change/")
    assert page.status_code == 200 and 'name="_save"' not in page.content.decode()
    assert 'value="delete_selected"' not in client.get(base).content.decode()
    assert client.get(f"{base}add/").status_code == 403
    assert client.post(f"{base}{entry.pk}/change/", {"object_repr": "forged"}).status_code == 403
    assert client.post(f"{base}{entry.pk}/delete/", {"post": "yes"}).status_code == 403
    client.post(base, {"action": "delete_selected", "_selected_action": [entry.pk], "post": "yes"})
    assert LogEntry.objects.get(pk=entry.pk).object_repr == "chat"


def test_deleting_an_object_keeps_its_history(client):
    client.force_login(User.objects.create_superuser("root", password="x"))
    route = make_route(name="chat")
    client.post(f"/admin/routes_admin/route/{route.pk}/delete/", {"post": "yes"})
    assert [e.action for e in LogEntry.objects.filter(object_repr="chat", content_type__model="route")] == [
        LogEntry.Action.DELETE,
        LogEntry.Action.CREATE,
    ]


needs_postgresql = pytest.mark.skipif(connection.vendor != "postgresql", reason="the trigger is PostgreSQL's")


@needs_postgresql
def test_the_database_refuses_to_change_an_entry(entry):
    entry.object_repr = "forged"
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        entry.save()
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        LogEntry.objects.filter(pk=entry.pk).update(actor=None, remote_addr="192.0.2.1")
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        LogEntry.objects.filter(pk=entry.pk).delete()
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("DELETE FROM auditlog_logentry")
    assert LogEntry.objects.get(pk=entry.pk).object_repr == "chat"


def test_the_history_list_filters_by_object_user_and_time(client):
    ann = make_user("ann", "Admin")
    client.force_login(ann)
    client.post("/admin/routes_admin/route/add/", ROUTE_FORM)
    make_route(name="other", path_prefix="/v2")  # no user
    route_type = ContentType.objects.get_for_model(Route).pk
    base = "/admin/auditlog/logentry/"
    by_user = client.get(f"{base}?actor={ann.pk}").content.decode()
    assert "chat" in by_user and "other" not in by_user
    by_object = client.get(f"{base}?resource_type={route_type}&object_pk={Route.objects.get(name='other').pk}")
    assert "other" in by_object.content.decode() and "/chat" not in by_object.content.decode()
    today = Route.objects.get(name="chat").created
    by_day = client.get(
        f"{base}?timestamp__year={today.year}&timestamp__month={today.month}&timestamp__day={today.day}"
    )
    assert by_day.status_code == 200 and "chat" in by_day.content.decode()
    target_type = ContentType.objects.get_for_model(UpstreamTarget).pk
    assert "chat/a" in client.get(f"{base}?resource_type={target_type}").content.decode()
    assert APIKey.objects.count() == 0


@pytest.mark.urls("tests.urls_history_api")
def test_a_user_who_authenticates_inside_an_api_view_is_named(client):
    # DRF authenticates in the view, after the middleware has run: the user is read when the entry is written.
    make_user("bot", "Operator", password="bot-password")
    route = make_route(name="chat")
    credentials = base64.b64encode(b"bot:bot-password").decode()
    response = client.post(
        f"/api/test-routes/{route.pk}/priority",
        {"priority": 3},
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Basic {credentials}",
    )
    assert response.status_code == 200, response.content
    updated = entries_for(route)[-1]
    assert updated.changes_dict == {"priority": ["0", "3"]}
    assert updated.actor.username == "bot" and updated.remote_addr == "127.0.0.1"
