"""Users with a role, for the management API's tests: Django groups holding model permissions.

The roles' real groups come from a data migration (issue 11, point 1); these hold the same
permissions so the API's enforcement can be tested on its own.
"""

from django.contrib.auth.models import Group, Permission, User

from routes_admin.models import ManagementToken

CONFIGURATION = ("route", "upstreamtarget", "quotaplan", "apikey")
RECORDS = ("requestlog", "keyusage")


def _permissions(role: str) -> list[Permission]:
    perms = Permission.objects.filter(content_type__app_label="routes_admin")
    if role == "admin":
        return list(Permission.objects.all())
    if role == "operator":
        return list(
            perms.filter(content_type__model__in=CONFIGURATION)
            | perms.filter(content_type__model__in=RECORDS, codename__startswith="view_")
        )
    if role == "auditor":
        return list(Permission.objects.filter(codename__startswith="view_"))
    return []


def make_user(role: str) -> User:
    """A user in the group of that role ("admin", "operator", "auditor"; anything else: no group)."""
    user = User.objects.create_user(f"{role}-{User.objects.count() + 1}", password="pw")
    if role in ("admin", "operator", "auditor"):
        group, created = Group.objects.get_or_create(name=f"test-{role}")
        if created:
            group.permissions.set(_permissions(role))
        user.groups.add(group)
    return user


def token_for(role: str) -> str:
    """A management token of a new user with that role."""
    _, secret = ManagementToken.objects.issue(make_user(role), "tests")
    return secret


def bearer(secret: str) -> dict:
    return {"HTTP_AUTHORIZATION": f"Bearer {secret}"}
