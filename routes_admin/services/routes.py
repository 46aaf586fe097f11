"""Routes with their targets: the one place they are created, changed and deleted.

The rules every surface gets from here:
- a target left unnamed is named after its URL's host and port (`default_target_name`);
- a target's stored credential is kept when none is given, but only while its URL keeps its
  scheme, host and port: a credential follows its host, so pointing a target elsewhere drops it
  unless it is given again (`_credential`);
- the names of a route's targets are unique (log rows and breakers know targets by name);
- a route's methods are HTTP method tokens (RFC 9110: letters, digits and !#$%&'*+-.^_`|~), and
  its name has no control characters (it is shown in pages, logs and error messages).

What is saved but cannot work as meant is a warning, not a refusal (`warnings_for`,
`route_warnings`): an enabled route with no enabled target, and enabled routes that shadow each
other. A route and its targets are often saved one after the other (the configuration file, the
API's route then its targets), so refusing the first step would refuse a valid end state; every
surface shows the warnings instead (the admin's change page, the API's `warnings`, apply_config).
"""

import json
import re
import unicodedata
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from django.db import transaction
from django.db.models import Count, Q

from ..models import Route, UpstreamTarget
from ..validators import default_target_name, origin
from .errors import ServiceError, checked

ROUTE_FIELDS = (*Route.SETTINGS, "fallback", "quota_plan")
TARGET_FIELDS = tuple(f.name for f in UpstreamTarget._meta.concrete_fields if f.name not in ("id", "route"))
CREDENTIAL_LEFT_BEHIND = (
    "The URL now points at another scheme, host or port: the stored credential is not sent there. "
    "Give the credential again, or remove the credential header."
)


@dataclass
class SavedRoute:
    route: Route
    targets: list[UpstreamTarget] = field(default_factory=list)  # in the order given
    deleted: list[UpstreamTarget] = field(default_factory=list)


# --- Checks (no writes) -------------------------------------------------------------------------

METHOD_TOKEN = re.compile(r"[A-Za-z0-9!#$%&'*+\-.^_`|~]+")


def check_route(route: Route | None, fields: dict) -> Route:
    """The route as it will be saved: `route` (or a new one) with `fields` applied, checked."""
    _only(fields, ROUTE_FIELDS)
    route = route if route is not None else Route()
    for name, value in fields.items():
        setattr(route, name, value)
    _check_methods_and_name(route)
    checked(route)
    return route


def _check_methods_and_name(route: Route) -> None:
    errors = {}
    wrong = [m for m in route.method_list if not METHOD_TOKEN.fullmatch(m)]
    if wrong:
        errors["methods"] = [
            f"Not an HTTP method: {', '.join(map(repr, wrong))} (e.g. GET,POST; empty allows every method)."
        ]
    if any(unicodedata.category(c) == "Cc" for c in route.name or ""):
        errors["name"] = ["A name has no control characters (tabs, line breaks, escapes)."]
    if errors:
        raise ServiceError(errors)


def check_target(old: UpstreamTarget | None, given: dict, route: Route | None = None) -> UpstreamTarget:
    """The target as it will be saved: `old`'s values (or the defaults) where `given` leaves a field
    out, the default name, the credential rule; checked by the model's rules. Not saved."""
    _only(given, TARGET_FIELDS)
    target = UpstreamTarget()
    if old is not None:
        for name in TARGET_FIELDS:
            setattr(target, name, getattr(old, name))
        target.pk, target.route_id = old.pk, old.route_id
        target._state.adding, target._state.db = False, old._state.db  # an update: unique checks skip itself
    for name, value in given.items():
        setattr(target, name, value)
    target.name = target.name or default_target_name(target.url)
    _credential(old, target, given)
    if route is not None and route.pk:
        target.route = route
    checked(target, exclude=() if target.route_id else ("route",))
    return target


def check_targets(route: Route | None, targets: list[dict]) -> list[UpstreamTarget]:
    """A route's whole list of targets, each given as its fields and, for an existing target of the
    route, its "id". Errors are by position (ServiceError's "targets")."""
    existing = {t.pk: t for t in route.targets.all()} if route is not None and route.pk else {}
    errors, checked_targets, names = [], [], set()
    for given in targets:
        given = dict(given)
        error = {}
        target_id = given.pop("id", None)
        old = existing.get(target_id) if target_id is not None else None
        if target_id is not None and old is None:
            error["id"] = [f"This route has no target {target_id}."]
        try:
            target = check_target(old, given, route)
        except ServiceError as exc:
            error.update(exc.errors)
            target = None
        if target is not None:
            if target.name in names:
                error.setdefault("name", []).append(f"Two targets of this route are named {target.name!r}.")
            names.add(target.name)
        errors.append(error)
        checked_targets.append(target)
    if any(errors):
        raise ServiceError({"targets": errors})
    return checked_targets


def _credential(old: UpstreamTarget | None, target: UpstreamTarget, given: dict) -> None:
    """Keep the stored credential when none is given, unless the URL moved to another origin."""
    if "credential_value" in given or old is None or not old.credential_value:
        return
    if origin(old.url) == origin(target.url):
        return
    target.credential_value = ""
    if target.credential_header:
        raise ServiceError({"credential_value": [CREDENTIAL_LEFT_BEHIND]})


def _only(fields: dict, allowed) -> None:
    unknown = set(fields) - set(allowed)
    if unknown:  # a caller's mistake, not the user's
        raise TypeError(f"not a field here: {', '.join(sorted(unknown))}")


# --- Warnings (saved, but not working as meant) ------------------------------------------------

NO_USABLE_TARGET = (
    "This route is enabled but has no enabled target: the calls it matches fail with 502 "
    "(or go to its fallback route). Add or enable a target, or disable the route."
)


def _precedence(route: Route) -> tuple:
    """What orders routes on a path besides their name (proxy/config.py sorts on the same): prefix,
    priority and conditions, written so that two routes matching the same calls compare equal."""
    return (
        route.path_prefix.rstrip("/"),
        route.priority,
        frozenset(route.method_list),
        frozenset(route.model_list),
        frozenset((name.lower(), str(value)) for name, value in (route.match_headers or {}).items()),
        json.dumps(route.match_body or {}, sort_keys=True, default=str),
    )


def warnings_for(routes: Iterable[tuple[Route, int]]) -> dict[str, list[str]]:
    """Warnings by route name for a whole configuration, given as (route, its enabled targets).

    Only enabled routes are looked at. Two enabled routes with the same prefix, priority and
    conditions (methods, models, headers, body fields) match the same calls, and the one whose
    name sorts first takes them all: both are flagged.
    """
    found: dict[str, list[str]] = defaultdict(list)
    alike = defaultdict(list)
    for route, usable_targets in routes:
        if not route.enabled:
            continue
        if not usable_targets:
            found[route.name].append(NO_USABLE_TARGET)
        alike[_precedence(route)].append(route.name)
    for names in alike.values():
        if len(names) < 2:
            continue
        first, *rest = sorted(names)
        found[first].append(
            f"Same prefix, priority and conditions as {', '.join(rest)}: this route takes all of their calls "
            "(the name breaks the tie). Change a priority or a condition, or disable one of them."
        )
        for name in rest:
            found[name].append(
                f"Same prefix, priority and conditions as {first}, which comes first by name: this route never "
                "serves a call. Change a priority or a condition, or disable one of them."
            )
    return dict(found)


def configuration_warnings() -> dict[str, list[str]]:
    """Warnings by route name for the saved configuration (one query)."""
    routes = Route.objects.enabled().annotate(usable_targets=Count("targets", filter=Q(targets__enabled=True)))
    return warnings_for((route, route.usable_targets) for route in routes)


def route_warnings(route: Route) -> list[str]:
    """The saved route's warnings (none while it is disabled)."""
    return configuration_warnings().get(route.name, []) if route.enabled else []


# --- Writes ---------------------------------------------------------------------------------------


@transaction.atomic
def save_route(route: Route | None, fields: dict, targets: list[dict] | None = None) -> SavedRoute:
    """Create (route=None) or change a route; with `targets`, its whole list of targets: each is
    given as its fields plus, for an existing one, its "id"; the route's targets not listed are
    deleted."""
    route = check_route(route, fields)
    wanted = check_targets(route, targets) if targets is not None else None
    route.save()
    saved = SavedRoute(route)
    if wanted is None:
        return saved
    keep = {target.pk for target in wanted if target.pk}
    for gone in route.targets.exclude(pk__in=keep):
        gone.delete()  # one by one, so each deletion is recorded and announced
        saved.deleted.append(gone)
    for target in wanted:
        target.route = route
        target.save()
        saved.targets.append(target)
    return saved


@transaction.atomic
def save_target(route: Route, target: UpstreamTarget | None, given: dict) -> UpstreamTarget:
    """Add a target to a saved route (target=None) or change one of its targets."""
    if target is not None and target.route_id != route.pk:
        raise ServiceError({"id": [f"This route has no target {target.pk}."]})
    checked_target = check_target(target, given, route)
    others = route.targets.exclude(pk=checked_target.pk) if checked_target.pk else route.targets.all()
    if others.filter(name=checked_target.name).exists():
        raise ServiceError({"name": [f"Two targets of this route are named {checked_target.name!r}."]})
    checked_target.save()
    return checked_target


@transaction.atomic
def delete_target(target: UpstreamTarget) -> None:
    target.delete()


@transaction.atomic
def delete_route(route: Route) -> None:
    """Delete a route and its targets; keys lose it from their reach."""
    route.delete()
