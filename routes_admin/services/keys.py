"""API keys: issue, change, rotate, revoke and delete them.

The rules every surface gets from here:
- a key's reach is explicit: some routes, or all routes (`check_reach`);
- a key is not issued already expired;
- a rotation's grace period for the old secret is between 0 and MAX_GRACE.
"""

from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from ..models import APIKey
from .errors import ServiceError, checked

MAX_GRACE = timedelta(days=30)  # the longest an old secret may keep working after a rotation
NO_REACH = "Say which routes the key may call, or set all_routes: a key that may call nothing is of no use."


def check_reach(all_routes: bool, routes) -> None:
    if not all_routes and not list(routes):
        raise ServiceError({"routes": [NO_REACH]})


def check_key(key: APIKey | None, fields: dict, routes=None) -> APIKey:
    """The key as it will be saved: `key` (or a new one) with `fields` applied, checked; `routes`
    None keeps the key's routes."""
    key = key if key is not None else APIKey()
    for name, value in fields.items():
        setattr(key, name, value)
    if routes is None:
        routes = key.routes.all() if key.pk else []
    check_reach(key.all_routes, routes)
    if key.pk is None and key.expires is not None and key.expires <= timezone.now():
        raise ServiceError({"expires": ["A new key's expiry is in the future."]})
    checked(key, exclude=("prefix", "hashed_secret"))
    return key


@transaction.atomic
def issue_key(fields: dict, routes=(), key: APIKey | None = None) -> tuple[APIKey, str]:
    """A new key (or the unsaved `key`, e.g. an admin form's) with its routes; returns it with its
    full secret, to show once: only its hash is stored."""
    key = check_key(key, fields, routes)
    key, secret = APIKey.objects.issue(key)
    key.routes.set(routes)
    return key, secret


@transaction.atomic
def update_key(key: APIKey, fields: dict, routes=None) -> APIKey:
    """Change a key's settings; `routes` None keeps its routes."""
    key = check_key(key, fields, routes)
    key.save()
    if routes is not None:
        key.routes.set(routes)
    return key


def check_grace(grace: timedelta) -> None:
    if not timedelta(0) <= grace <= MAX_GRACE:
        raise ServiceError({"grace": [f"The grace period is between 0 and {MAX_GRACE.days} days."]})


@transaction.atomic
def rotate_key(key: APIKey, grace: timedelta = timedelta(0)) -> str:
    """A new secret for the key (its limits, routes and usage stay), returned to show once; the
    old one keeps working for `grace`."""
    check_grace(grace)
    return key.rotate(grace)


@transaction.atomic
def revoke_key(key: APIKey) -> APIKey:
    """Refuse the key from now on, for good (a revoked key stays revoked)."""
    key.revoke()
    return key


@transaction.atomic
def delete_key(key: APIKey) -> None:
    key.delete()
