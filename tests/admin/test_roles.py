"""The roles Admin, Operator and Auditor, enforced in the admin for every model."""

from datetime import date

import pytest
from auditlog.models import LogEntry
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.utils import timezone

from jobs.models import Job
from routes_admin import roles
from routes_admin.models import APIKey, KeyUsage, QuotaPlan, RequestLog, Route
from tests.admin_forms import form_values
from tests.factories import make_key, make_plan, make_route, make_user

pytestmark = pytest.mark.django_db

User = get_user_model()


def test_the_migration_creates_each_role_group_with_exactly_its_permissions():
    for name, wanted in roles.ROLES.items():
        group = Group.objects.get(name=name)
        have = {f"{p.content_type.app_label}.{p.codename}" for p in group.permissions.select_related("content_type")}
        assert have == set(wanted), name


def test_no_role_may_add_change_or_delete_change_history():
    for wanted in roles.ROLES.values():
        assert not {"auditlog.add_logentry", "auditlog.change_logentry", "auditlog.delete_logentry"} & set(wanted)


def test_operators_may_not_manage_people_and_auditors_may_change_nothing():
    assert not [p for p in roles.ROLES[roles.OPERATOR] if p.startswith("auth.")]
    assert all(p.split(".")[1].startswith("view_") for p in roles.ROLES[roles.AUDITOR])


def test_role_helpers():
    admin = make_user("ann", roles.ADMIN)
    operator = make_user("otto", roles.OPERATOR)
    auditor = make_user("aude", roles.AUDITOR)
    nobody = make_user("nobody")
    root = User.objects.create_superuser("root", password="x")
    assert [roles.user_role(u) for u in (admin, operator, auditor, nobody, root)] == [
        "Admin",
        "Operator",
        "Auditor",
        None,
        "Admin",
    ]
    assert roles.is_auditor(auditor) and not roles.is_auditor(operator)
    assert roles.has_role(operator, "Operator")
    assert roles.can_change(operator, Route) and roles.can_change(operator, "routes_admin.apikey")
    assert not roles.can_change(operator, User) and roles.can_change(admin, User)
    assert not roles.can_change(auditor, Route) and not roles.can_change(auditor, QuotaPlan)
    auditor.groups.add(Group.objects.get(name=roles.OPERATOR))
    assert roles.user_role(auditor) == "Operator"  # the strongest role wins


# --- The admin, for each role and each model ---------------------------------------------------

# model -> (admin URL part, the roles that may change it, a field to change and its new value)
CHANGEABLE = {
    "route": ("routes_admin/route", {"Admin", "Operator"}, "priority", "7"),
    "quotaplan": ("routes_admin/quotaplan", {"Admin", "Operator"}, "requests_per_minute", "42"),
    "apikey": ("routes_admin/apikey", {"Admin", "Operator"}, "owner", "changed"),
    "user": ("auth/user", {"Admin"}, "first_name", "Changed"),
    "group": ("auth/group", {"Admin"}, "name", "Renamed"),
}
ROLE_NAMES = ["Admin", "Operator", "Auditor"]


def make_object(model: str):
    if model == "route":
        return make_route(name="r")
    if model == "quotaplan":
        return make_plan(name="p")
    if model == "apikey":
        return make_key(all_routes=True)[0]
    if model == "user":
        return make_user("someone")
    return Group.objects.create(name="extra")


def value_of(obj, field):
    obj.refresh_from_db()
    return str(getattr(obj, field))


def signed_in(client, role: str):
    client.force_login(make_user(f"as-{role.lower()}", role))
    return client


@pytest.mark.parametrize("role", ROLE_NAMES)
@pytest.mark.parametrize("model", list(CHANGEABLE))
def test_the_admin_lets_each_role_change_only_its_models(client, role, model):
    url, changers, field, new = CHANGEABLE[model]
    obj = make_object(model)
    signed_in(client, role)
    may_change = role in changers
    may_view = may_change or role == "Auditor"

    listing = client.get(f"/admin/{url}/")
    assert listing.status_code == (200 if may_view else 403)
    assert client.get(f"/admin/{url}/add/").status_code == (200 if may_change else 403)

    page = client.get(f"/admin/{url}/{obj.pk}/change/")
    assert page.status_code == (200 if may_view else 403)
    html = page.content.decode()
    assert ('name="_save"' in html) == may_change  # auditors get the read-only view

    # Submit the form as the page shows it, with one field changed. Refused: 403 and nothing saved.
    before = value_of(obj, field)
    data = form_values(html, f"{obj._meta.model_name}_form") if may_change else {field: new}
    data[field] = new
    response = client.post(f"/admin/{url}/{obj.pk}/change/", data)
    if may_change:
        assert response.status_code == 302, response.content.decode()[:3000]
        assert value_of(obj, field) == new
    else:
        assert response.status_code == 403
        assert value_of(obj, field) == before

    response = client.post(f"/admin/{url}/{obj.pk}/delete/", {"post": "yes"})
    assert response.status_code == (302 if may_change else 403)
    assert type(obj).objects.filter(pk=obj.pk).exists() != may_change


@pytest.mark.parametrize("role", ["Operator", "Auditor"])
def test_a_refused_role_cannot_add_a_user_or_give_itself_a_role(client, role):
    signed_in(client, role)
    response = client.post(
        "/admin/auth/user/add/", {"username": "mallory", "password1": "x" * 20, "password2": "x" * 20}
    )
    assert response.status_code == 403
    assert not User.objects.filter(username="mallory").exists()
    me = User.objects.get(username=f"as-{role.lower()}")
    response = client.post(f"/admin/auth/user/{me.pk}/change/", {"username": me.username, "is_superuser": "on"})
    assert response.status_code == 403
    me.refresh_from_db()
    assert not me.is_superuser


@pytest.mark.parametrize("action", ["revoke", "reset_quota_counters", "delete_selected"])
def test_an_auditor_cannot_run_the_key_actions(client, action):
    key, _ = make_key(all_routes=True)
    signed_in(client, "Auditor")
    listing = client.get("/admin/routes_admin/apikey/").content.decode()
    assert f'value="{action}"' not in listing
    response = client.post("/admin/routes_admin/apikey/", {"action": action, "_selected_action": [key.pk]})
    assert response.status_code in (200, 302)  # Django answers "no action selected"
    key.refresh_from_db()
    assert key.revoked is None and APIKey.objects.filter(pk=key.pk).exists()


def test_an_operator_can_revoke_a_key_from_the_list(client):
    key, _ = make_key(all_routes=True)
    signed_in(client, "Operator")
    selected = {"action": "revoke", "_selected_action": [key.pk]}
    asked = client.post("/admin/routes_admin/apikey/", selected)
    assert asked.status_code == 200  # the confirmation page first
    key.refresh_from_db()
    assert key.revoked is None
    response = client.post("/admin/routes_admin/apikey/", {**selected, "post": "yes"})
    assert response.status_code == 302
    key.refresh_from_db()
    assert key.revoked is not None


def test_an_auditor_cannot_reset_a_targets_breaker(client):
    route = make_route("http://127.0.0.1:9/v1", name="r")
    target = route.targets.get()
    signed_in(client, "Auditor")
    listing = client.get("/admin/routes_admin/upstreamtarget/")
    assert listing.status_code == 200 and 'value="reset_breakers"' not in listing.content.decode()
    signed_in(client, "Operator")
    assert 'value="reset_breakers"' in client.get("/admin/routes_admin/upstreamtarget/").content.decode()
    assert target.pk


# Records: every role reads them; nobody adds, changes or deletes them in the admin.
RECORDS = [
    "routes_admin/requestlog",
    "routes_admin/keyusage",
    "routes_admin/upstreamtarget",
    "auditlog/logentry",
    "jobs/job",
]


def make_record(url: str):
    if url == "routes_admin/requestlog":
        return RequestLog.objects.create(request_id="r1", method="GET", path="/v1/x", status=200, latency_ms=1.0)
    if url == "routes_admin/keyusage":
        return KeyUsage.objects.create(api_key=make_key(all_routes=True)[0], day=date(2026, 1, 1), requests=5)
    if url == "routes_admin/upstreamtarget":
        return make_route("http://127.0.0.1:9/v1", name="r").targets.get()
    if url == "jobs/job":
        key = make_key(all_routes=True)[0]
        return Job.objects.create(
            api_key=key, route_name="r", created=timezone.now(), request_id="j1", method="POST", path="/v1/x"
        )
    make_plan(name="p")
    return LogEntry.objects.latest("pk")


@pytest.mark.parametrize("role", ROLE_NAMES)
@pytest.mark.parametrize("url", RECORDS)
def test_every_role_reads_the_records_and_none_adds_changes_or_deletes_them(client, role, url):
    record = make_record(url)
    signed_in(client, role)
    assert client.get(f"/admin/{url}/").status_code == 200
    assert client.get(f"/admin/{url}/add/").status_code == 403
    if url != "routes_admin/upstreamtarget":  # a target's page is its route's (tested above)
        assert client.post(f"/admin/{url}/{record.pk}/change/", {"status": "500", "requests": "0"}).status_code == 403
        delete = client.post(f"/admin/{url}/{record.pk}/delete/", {"post": "yes"})
        assert delete.status_code == 403
    assert type(record).objects.filter(pk=record.pk).exists()


def test_a_user_without_a_role_sees_no_model(client):
    client.force_login(make_user("norole"))
    index = client.get("/admin/").content.decode()
    assert "/admin/routes_admin/route/" not in index
    assert client.get("/admin/routes_admin/route/").status_code == 403


# --- Roles cannot be climbed: superusers and permissions -----------------------------------------


def user_form(client, user) -> dict:
    page = client.get(f"/admin/auth/user/{user.pk}/change/")
    assert page.status_code == 200
    return form_values(page.content.decode(), "user_form")


def test_the_admin_role_cannot_make_itself_or_anyone_a_superuser(client):
    signed_in(client, "Admin")
    me = User.objects.get(username="as-admin")
    other = make_user("plain", roles.OPERATOR)
    for user in (me, other):
        data = user_form(client, user)
        assert "is_superuser" not in data
        data["is_superuser"] = "on"
        data["first_name"] = "Edited"
        response = client.post(f"/admin/auth/user/{user.pk}/change/", data)
        assert response.status_code == 302
        user.refresh_from_db()
        assert user.first_name == "Edited" and not user.is_superuser


def test_the_admin_role_cannot_change_delete_or_set_the_password_of_a_superuser(client):
    root = User.objects.create_superuser("root", password="root-password")
    signed_in(client, "Admin")
    page = client.get(f"/admin/auth/user/{root.pk}/change/")
    assert page.status_code == 200 and 'name="_save"' not in page.content.decode()  # read-only

    response = client.post(
        f"/admin/auth/user/{root.pk}/change/", {"username": "root", "is_staff": "", "is_active": "", "email": "x@y.z"}
    )
    assert response.status_code == 403
    assert client.get(f"/admin/auth/user/{root.pk}/password/").status_code == 403
    response = client.post(
        f"/admin/auth/user/{root.pk}/password/",
        {"password1": "taken-over-123", "password2": "taken-over-123", "usable_password": "true"},
    )
    assert response.status_code == 403
    assert client.post(f"/admin/auth/user/{root.pk}/delete/", {"post": "yes"}).status_code == 403
    response = client.post(
        "/admin/auth/user/", {"action": "delete_selected", "_selected_action": [root.pk], "post": "yes"}
    )
    assert response.status_code == 403
    root.refresh_from_db()
    assert root.is_staff and root.is_active and root.is_superuser and root.check_password("root-password")


def test_the_admin_role_still_manages_people_who_are_not_superusers(client):
    other = make_user("plain", roles.OPERATOR)
    signed_in(client, "Admin")
    data = user_form(client, other)
    data.pop("is_staff", None)
    assert client.post(f"/admin/auth/user/{other.pk}/change/", data).status_code == 302
    response = client.post(
        f"/admin/auth/user/{other.pk}/password/",
        {"password1": "a-new-pass-123", "password2": "a-new-pass-123", "usable_password": "true"},
    )
    assert response.status_code == 302
    other.refresh_from_db()
    assert not other.is_staff and other.check_password("a-new-pass-123")


def test_a_superuser_grants_and_edits_superusers(client):
    target = make_user("promoted", roles.ADMIN)
    client.force_login(User.objects.create_superuser("root", password="x"))
    data = user_form(client, target)
    data["is_superuser"] = "on"
    assert client.post(f"/admin/auth/user/{target.pk}/change/", data).status_code == 302
    target.refresh_from_db()
    assert target.is_superuser
    response = client.post(
        f"/admin/auth/user/{target.pk}/password/",
        {"password1": "a-new-pass-123", "password2": "a-new-pass-123", "usable_password": "true"},
    )
    assert response.status_code == 302


def permission_id(dotted: str) -> str:
    app_label, codename = dotted.split(".")
    return str(Permission.objects.get(content_type__app_label=app_label, codename=codename).pk)


def test_the_admin_role_cannot_grant_permissions_it_does_not_hold(client):
    """Neither to a user directly, nor to a group, nor through a group a superuser made stronger."""
    signed_in(client, "Admin")
    me = User.objects.get(username="as-admin")
    data = user_form(client, me)
    data["user_permissions"] = [permission_id("auditlog.delete_logentry")]
    response = client.post(f"/admin/auth/user/{me.pk}/change/", data)
    assert response.status_code == 200 and "Only a superuser may grant" in response.content.decode()
    assert not me.user_permissions.exists()

    group = Group.objects.get(name=roles.ADMIN)
    page = client.get(f"/admin/auth/group/{group.pk}/change/").content.decode()
    data = form_values(page, "group_form")
    data["permissions"] = [*data["permissions"], permission_id("auditlog.delete_logentry")]
    response = client.post(f"/admin/auth/group/{group.pk}/change/", data)
    assert response.status_code == 200 and "auditlog.delete_logentry" in response.content.decode()
    assert not group.permissions.filter(codename="delete_logentry").exists()

    stronger = Group.objects.create(name="Root-made")
    stronger.permissions.add(permission_id("auditlog.delete_logentry"))
    data = user_form(client, me)
    data["groups"] = [*data["groups"], str(stronger.pk)]
    response = client.post(f"/admin/auth/user/{me.pk}/change/", data)
    assert response.status_code == 200 and "Only a superuser may grant" in response.content.decode()
    assert not me.groups.filter(pk=stronger.pk).exists()

    # What it holds itself it may grant: the Operator role, to a user without one.
    plain = make_user("plain")
    data = user_form(client, plain)
    data["groups"] = [str(Group.objects.get(name=roles.OPERATOR).pk)]
    assert client.post(f"/admin/auth/user/{plain.pk}/change/", data).status_code == 302
    assert roles.user_role(plain) == roles.OPERATOR
