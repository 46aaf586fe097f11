"""Change history, kept by django-auditlog: what is recorded, who is named, what is masked.

Every create, update and delete of routes, targets, plans, keys, management tokens, users and
groups (and of their many-to-many fields: a key's routes, a user's groups, a group's permissions) writes one
auditlog LogEntry with the fields before and after, whatever made the change: the admin, the API,
a command or a plain `.save()`. Bulk `QuerySet.update()` and `.delete()` send no signals, so
configuration code saves row by row (as it must anyway for the gateway's reload signal); a bulk
removal that must be seen says so itself (`record_usage_reset`).

Who made a change comes from `recorded_as`: the web middleware names the signed-in user and the
client's real address, commands name themselves. The name is also kept as text in
`additional_data`, so an entry still says who after that user is deleted.

The entries are append-only: nobody gets a permission to change them (routes_admin/roles.py),
the admin page is read-only for everyone (routes_admin/admin_history.py), and on PostgreSQL
triggers refuse UPDATE and DELETE (migration 0006_history_append_only) and TRUNCATE
(0012_history_no_truncate); `manage.py auditlogflush` is replaced by one that refuses.
"""

from contextlib import contextmanager

from auditlog.context import set_extra_data
from auditlog.models import LogEntry
from auditlog.registry import auditlog
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.utils.functional import SimpleLazyObject

from .models import APIKey, ManagementToken, ModelPrice, QuotaPlan, Route, Team, UpstreamTarget, mask_secret

HIDDEN = "(hidden)"
# auditlog masks str(value), so an empty old value (a new object) arrives as "None".
NOTHING = ("", "None")


def hide(value: str) -> str:
    """Mask for secrets of which nothing may be shown: key hashes, password hashes."""
    return value if value in NOTHING else HIDDEN


def hide_credential(value: str) -> str:
    """Mask for upstream credentials: their last four characters at most, as the admin shows them."""
    return value if value in NOTHING else mask_secret(value)


def register_models() -> None:
    """Connect auditlog to the models whose changes are recorded (called by the app's ready())."""
    auditlog.register(Route, exclude_fields=["updated"])  # `updated` changes on every save: noise
    auditlog.register(
        UpstreamTarget, mask_fields=["credential_value"], mask_callable="routes_admin.history.hide_credential"
    )
    auditlog.register(QuotaPlan)
    auditlog.register(ModelPrice)
    auditlog.register(Team)
    auditlog.register(
        APIKey,
        mask_fields=["hashed_secret", "previous_hashed_secret"],  # the one a rotation replaced, too
        mask_callable="routes_admin.history.hide",
        m2m_fields={"routes"},
    )
    auditlog.register(
        get_user_model(),
        exclude_fields=["last_login"],  # every sign-in would be an entry
        mask_fields=["password"],
        mask_callable="routes_admin.history.hide",
        m2m_fields={"groups", "user_permissions"},
    )
    auditlog.register(Group, m2m_fields={"permissions"})
    auditlog.register(
        ManagementToken,
        exclude_fields=["last_used"],  # written by use, not by anyone's change
        mask_fields=["hashed_secret"],
        mask_callable="routes_admin.history.hide",
    )


@contextmanager
def recorded_as(user=None, *, command: str = "", remote_addr: str | None = None):
    """Name who makes the changes inside the block in their history entries.

    `user` may be a callable returning the user (or None): it is called when an entry is written,
    so a user that authenticates later in the request (a DRF token) is still named.
    """
    if callable(user) and not isinstance(user, get_user_model()):
        actor = SimpleLazyObject(user)  # auditlog checks isinstance(actor, User), which evaluates it
    else:
        actor = user

    def who() -> dict:
        if command:
            return {"command": command}
        if actor is not None and getattr(actor, "pk", None) is not None:
            return {"actor": actor.get_username()}
        return {}

    with set_extra_data(context_data={"actor": actor, "remote_addr": remote_addr or None, "additional_data": who}):
        yield


@contextmanager
def recorded_as_command(name: str):
    """For management commands: entries name the command (`manage.py NAME`) instead of a user."""
    with recorded_as(command=name):
        yield


def author(entry) -> str:
    """Who made the change of a history entry, in words."""
    data = entry.additional_data or {}
    if entry.actor_id is not None and entry.actor is not None:
        return entry.actor.get_username()
    if data.get("actor"):
        return f"{data['actor']} (user since deleted)"
    if data.get("command"):
        return f"manage.py {data['command']}"
    return "system (no user)"


def record_usage_reset(key, removed: dict) -> None:
    """One entry on the key for "Reset the quota counters": its usage rows of this month were deleted
    in bulk (no signal), and what they held is kept here."""
    held = (
        f"{removed.get('requests') or 0:,} requests, {removed.get('total_tokens') or 0:,} tokens "
        f"({removed.get('days') or 0} day(s) since {removed.get('since')})"
    )
    LogEntry.objects.log_create(
        key, action=LogEntry.Action.UPDATE, changes={"usage this month": [held, "reset to zero"]}, force_log=True
    )
