"""Users with a role, for the management API's tests: the real role groups (migration 0005_roles)."""

from django.contrib.auth.models import Group, User

from routes_admin import roles
from routes_admin.models import ManagementToken

GROUPS = {"admin": roles.ADMIN, "operator": roles.OPERATOR, "auditor": roles.AUDITOR}


def make_user(role: str) -> User:
    """A user in the group of that role ("admin", "operator", "auditor"; anything else: no group)."""
    user = User.objects.create_user(f"{role}-{User.objects.count() + 1}", password="pw")
    if role in GROUPS:
        user.groups.add(Group.objects.get(name=GROUPS[role]))
    return user


def token_for(role: str) -> str:
    """A management token of a new user with that role."""
    _, secret = ManagementToken.objects.issue(make_user(role), "tests")
    return secret


def bearer(secret: str) -> dict:
    return {"HTTP_AUTHORIZATION": f"Bearer {secret}"}
