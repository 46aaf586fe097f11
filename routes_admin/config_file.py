"""Configuration as code: routes, their targets, quota plans, teams and prices as one YAML file.

`manage.py export_config` writes it; `manage.py apply_config FILE` shows how the database differs
from it and, with --yes, makes the database match it in one transaction. The file is the whole
configuration of routes and plans: one missing from it is deleted. Keys are not part of it.

Credentials are never written: a target's credential is a reference to an environment variable,
`credential_value: ${ENV:GATEWAY_CREDENTIAL_NAME}`, read when the file is applied. Only variables
named GATEWAY_CREDENTIAL_... may be read, so a file cannot send the gateway's own settings
(SECRET_KEY, DATABASE_URL, ...) upstream. When that variable is not set, the credential already
stored for the target is kept (so a file exported on one machine applies unchanged on another); a
new target whose variable is unset is an error. A target whose URL moves to another scheme,
host or port loses the stored credential unless the variable is set (the rule of the service
layer).

Teams (name and budgets) are whole like plans: one missing from a file that has a `teams` list is
deleted (its keys stay, without a team); a file without `teams` leaves them alone. Keys' team
membership is not in the file (keys are not). Prices are a history, not a state: each price of the
file (model, optional target as "route/target", amounts, valid_from) is added, or changed when one
with the same model, target and valid_from exists; prices missing from the file are never deleted
(the admin or the API does that). A price without valid_from starts when the file is applied,
unless the price in force already says the same (so applying one file twice changes nothing).
Amounts are written as strings ("0.15"): YAML floats are read through their text, never as
binary floats.

The changes are made through the service layer (routes_admin/services), like every other surface's.

The YAML is bounded before it is built: at most MAX_FILE_BYTES, no anchors or aliases (a few
nested aliases expand a 1 KB file into gigabytes), at most MAX_DEPTH levels of nesting.
"""

import os
import re
from dataclasses import dataclass, field
from decimal import Decimal

import yaml
from django.core.exceptions import ValidationError
from django.db import transaction

from .models import Budgets, Limits, ModelPrice, QuotaPlan, Route, Team, UpstreamTarget
from .services import ServiceError, plans, spend
from .services import routes as route_service

VERSION = 1
ENV_REFERENCE = re.compile(r"^\$\{ENV:([A-Za-z_][A-Za-z0-9_]*)\}$")
CREDENTIAL_PREFIX = "GATEWAY_CREDENTIAL_"  # the only environment variables a file may read
MAX_FILE_BYTES = 1_000_000  # a configuration of a thousand routes is about 500 KB
MAX_DEPTH = 32  # nesting levels; the file's own structure uses about 8
PLAN_FIELDS = ("name", *Limits.LIMIT_FIELDS)
ROUTE_FIELDS = Route.SETTINGS
ROUTE_LINKS = ("fallback", "quota_plan")  # by name in the file
TARGET_FIELDS = ("name", "url", "weight", "position", "enabled", "credential_header", "model_aliases")
TEAM_FIELDS = ("name", *Budgets.BUDGET_FIELDS)
PRICE_FIELDS = spend.PRICE_COLUMNS
DECIMAL_FIELDS = (*Budgets.BUDGET_FIELDS, "input_per_million", "output_per_million", "per_call")


class ConfigError(Exception):
    """The file cannot be applied; `line` says where (1-based), when known."""

    def __init__(self, message: str, line: int | None = None):
        super().__init__(f"line {line}: {message}" if line else message)
        self.line = line


# --- Export ---------------------------------------------------------------------------------------


def credential_variable(route: str, target: str) -> str:
    """The environment variable a target's credential is read from, e.g. GATEWAY_CREDENTIAL_CHAT_OPENAI."""
    return "GATEWAY_CREDENTIAL_" + re.sub(r"[^A-Z0-9]+", "_", f"{route}_{target}".upper()).strip("_")


def _plain(value):
    """A value as the file writes it: amounts as decimal strings, dates as ISO text."""
    if isinstance(value, Decimal):
        return str(value)
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def _export_spend() -> dict:
    teams = [
        {name: _plain(getattr(team, name)) for name in TEAM_FIELDS if getattr(team, name) is not None}
        for team in Team.objects.order_by("name")
    ]
    prices = []
    for price in ModelPrice.objects.select_related("target__route").order_by("model", "target_id", "valid_from"):
        entry = {name: _plain(getattr(price, name)) for name in PRICE_FIELDS if name != "target"}
        entry["target"] = f"{price.target.route.name}/{price.target.name}" if price.target else None
        if entry["per_call"] is None:
            del entry["per_call"]
        prices.append(entry)
    return {"teams": teams, "prices": prices}


def export() -> tuple[str, list[str]]:
    """The YAML text, and the environment variables its credentials refer to."""
    variables = []
    plans = [
        {name: getattr(plan, name) for name in PLAN_FIELDS if getattr(plan, name) is not None}
        for plan in QuotaPlan.objects.order_by("name")
    ]
    routes = []
    for route in Route.objects.select_related("fallback", "quota_plan").prefetch_related("targets").order_by("name"):
        item = {name: _plain(getattr(route, name)) for name in ROUTE_FIELDS}
        item["fallback"] = route.fallback.name if route.fallback else None
        item["quota_plan"] = route.quota_plan.name if route.quota_plan else None
        item["targets"] = []
        for target in route.targets.all():
            entry = {name: getattr(target, name) for name in TARGET_FIELDS}
            if target.credential_value:
                variable = credential_variable(route.name, target.name)
                entry["credential_value"] = f"${{ENV:{variable}}}"
                variables.append(variable)
            item["targets"].append(entry)
        routes.append(item)
    header = (
        "# AI gateway configuration: apply with `manage.py apply_config FILE` (shows the diff; --yes applies).\n"
        "# Credentials are references to environment variables: credential_value: ${ENV:NAME}.\n"
    )
    document = {"version": VERSION, "plans": plans, "routes": routes, **_export_spend()}
    body = yaml.safe_dump(document, sort_keys=False, allow_unicode=True)
    return header + body, variables


# --- Reading, with line numbers -------------------------------------------------------------------


class Located(dict):
    """A YAML mapping that remembers its line and each key's line."""

    line: int = 0
    lines: dict


class LineLoader(yaml.SafeLoader):
    """A safe loader that refuses anchors, aliases and deep nesting while it composes the document,
    before anything is built from it (PyYAML expands aliases when it builds, and recurses per level)."""

    depth = 0

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            raise ConfigError(
                "anchors and aliases (&name, *name, <<: *name) are not accepted: write each value out",
                event.start_mark.line + 1,
            )
        if self.depth >= MAX_DEPTH:
            raise ConfigError(f"nested more than {MAX_DEPTH} levels deep", event.start_mark.line + 1)
        self.depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def _mapping(loader, node):
    loader.flatten_mapping(node)
    value = Located(loader.construct_mapping(node, deep=True))
    value.line = node.start_mark.line + 1
    value.lines = {key.value: key.start_mark.line + 1 for key, _ in node.value}
    return value


LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def _where(item: Located, key: str | None = None) -> int | None:
    if not isinstance(item, Located):
        return None
    return item.lines.get(key, item.line) if key else item.line


def _items(document: Located, key: str) -> list:
    items = document.get(key) or []
    if not isinstance(items, list) or not all(isinstance(item, Located) for item in items):
        raise ConfigError(f"{key} is a list of mappings", _where(document, key))
    return items


def _only(item: Located, allowed, what: str) -> None:
    for key in item:
        if key not in allowed:
            raise ConfigError(f"{what}: unknown field {key!r}", _where(item, key))


def _raise_for(exc: ValidationError, item: Located, what: str):
    """A model's ValidationError, at the line of the field it names."""
    if hasattr(exc, "error_dict"):
        name, errors = next(iter(exc.message_dict.items()))
        key = name if name in item else None
        label = f"{name}: " if name != "__all__" else ""
        raise ConfigError(f"{what}: {label}{' '.join(errors)}", _where(item, key)) from None
    raise ConfigError(f"{what}: {' '.join(exc.messages)}", _where(item)) from None


@dataclass
class Desired:
    """The file's content as unsaved model instances, checked by the models' own rules."""

    plans: dict = field(default_factory=dict)  # name -> QuotaPlan
    teams: dict | None = None  # name -> Team; None: the file has no teams list (teams left alone)
    prices: list = field(default_factory=list)  # [(PriceEntry, its mapping)]
    # name -> (Route, fallback name, plan name, [(UpstreamTarget, its mapping)], its mapping)
    routes: dict = field(default_factory=dict)


def read(path) -> str:
    """The file's text, refused before it is read further when it is larger than MAX_FILE_BYTES."""
    with open(path, "rb") as file:
        data = file.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise ConfigError(f"the file is larger than {MAX_FILE_BYTES:,} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not UTF-8 text (byte {exc.start})") from None


def load(text: str) -> Desired:
    if len(text) > MAX_FILE_BYTES:  # characters: at least as many bytes
        raise ConfigError(f"the file is larger than {MAX_FILE_BYTES:,} bytes")
    try:
        document = yaml.load(text, Loader=LineLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise ConfigError(f"not valid YAML: {getattr(exc, 'problem', exc)}", mark.line + 1 if mark else None) from None
    if not isinstance(document, Located):
        raise ConfigError("the file is a mapping with version, plans, routes, teams and prices", 1)
    _only(document, ("version", "plans", "routes", "teams", "prices"), "the file")
    if document.get("version") != VERSION:
        raise ConfigError(f"version must be {VERSION}", _where(document, "version"))
    desired = Desired()
    for item in _items(document, "plans"):
        _load_plan(item, desired)
    for item in _items(document, "routes"):
        _load_route(item, desired)
    if "teams" in document:
        desired.teams = {}
        for item in _items(document, "teams"):
            _load_team(item, desired)
    for item in _items(document, "prices"):
        _load_price(item, desired)
    for name, (_route, fallback, plan, _targets, item) in desired.routes.items():
        if fallback is not None and fallback not in desired.routes:
            raise ConfigError(
                f"route {name}: fallback {fallback!r} is not a route of this file", _where(item, "fallback")
            )
        if fallback == name:
            raise ConfigError(f"route {name}: fallback: a route cannot fall back to itself", _where(item, "fallback"))
        if plan is not None and plan not in desired.plans:
            raise ConfigError(
                f"route {name}: quota_plan {plan!r} is not a plan of this file", _where(item, "quota_plan")
            )
    return desired


def _name(item: Located, what: str, seen) -> str:
    name = item.get("name")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{what} needs a name", _where(item, "name"))
    if name in seen:
        raise ConfigError(f"{what} {name!r} appears twice", _where(item, "name"))
    return name


def _load_plan(item: Located, desired: Desired) -> None:
    _only(item, PLAN_FIELDS, "plan")
    name = _name(item, "plan", desired.plans)
    plan = QuotaPlan(**{key: item.get(key) for key in PLAN_FIELDS})
    try:
        plan.clean_fields(exclude=["created"])
    except ValidationError as exc:
        _raise_for(exc, item, f"plan {name}")
    desired.plans[name] = plan


def _decimals(item: Located) -> Located:
    """YAML reads 0.15 as a binary float: take its text instead, so 0.1 stays 0.1."""
    for name in DECIMAL_FIELDS:
        if isinstance(item.get(name), float):
            item[name] = Decimal(repr(item[name]))
    return item


def _load_team(item: Located, desired: Desired) -> None:
    _only(item, TEAM_FIELDS, "team")
    name = _name(item, "team", desired.teams)
    try:
        budgets = spend.check_budgets(dict(_decimals(item)))  # the service layer's budget rules
        team = Team(name=name, **budgets)
        team.clean_fields(exclude=["created"])
    except ValidationError as exc:
        _raise_for(exc, item, f"team {name}")
    desired.teams[name] = team


def _load_price(item: Located, desired: Desired) -> None:
    _only(item, PRICE_FIELDS, "price")
    what = f"price {item.get('model') or ''}".strip()
    try:
        entry = spend.check_price_entry(dict(_decimals(item)))
    except ValidationError as exc:
        raise ConfigError(f"{what}: {' '.join(exc.messages)}", _where(item)) from None
    key = (entry.model, entry.target.id if entry.target else None, entry.valid_from)
    if any((e.model, e.target.id if e.target else None, e.valid_from) == key for e, _ in desired.prices):
        raise ConfigError(f"{what}: priced twice for the same target and valid_from", _where(item))
    desired.prices.append((entry, item))


def _load_route(item: Located, desired: Desired) -> None:
    _only(item, (*ROUTE_FIELDS, *ROUTE_LINKS, "targets"), "route")
    _decimals(item)
    name = _name(item, "route", desired.routes)
    what = f"route {name}"
    route = Route(**{key: item[key] for key in ROUTE_FIELDS if key in item})
    try:
        route.clean_fields(exclude=["fallback", "quota_plan", "created", "updated"])
        route.clean()
    except ValidationError as exc:
        _raise_for(exc, item, what)
    targets, names = [], set()
    targets_list = item.get("targets") or []
    if not isinstance(targets_list, list) or not all(isinstance(t, Located) for t in targets_list):
        raise ConfigError(f"{what}: targets is a list of mappings", _where(item, "targets"))
    for entry in targets_list:
        _only(entry, (*TARGET_FIELDS, "credential_value"), f"{what}, target")
        target = UpstreamTarget(**{key: entry[key] for key in TARGET_FIELDS if key in entry})
        target.name = target.name or route_service.default_target_name(target.url)
        if target.name in names:
            raise ConfigError(f"{what}: two targets are named {target.name!r}", _where(entry, "name"))
        names.add(target.name)
        target.credential_reference = _reference(entry, what)
        target.credential_value = "x" if target.credential_reference else ""  # clean() checks the pair
        try:
            target.clean_fields(exclude=["route"])
            target.clean()
        except ValidationError as exc:
            _raise_for(exc, entry, f"{what}, target {target.name}")
        targets.append((target, entry))
    desired.routes[name] = (route, item.get("fallback"), item.get("quota_plan"), targets, item)


def _reference(entry: Located, what: str) -> str:
    """The variable a credential refers to, or "" for none. A literal secret is refused."""
    value = entry.get("credential_value") or ""
    if not value:
        return ""
    match = ENV_REFERENCE.match(str(value))
    if not match:
        raise ConfigError(
            f"{what}: credential_value must be a reference such as ${{ENV:{CREDENTIAL_PREFIX}NAME}}, "
            "never the secret itself",
            _where(entry, "credential_value"),
        )
    variable = match.group(1)
    if not variable.startswith(CREDENTIAL_PREFIX) or variable == CREDENTIAL_PREFIX:
        raise ConfigError(
            f"{what}: credential_value may only refer to a variable named {CREDENTIAL_PREFIX}..., not {variable}",
            _where(entry, "credential_value"),
        )
    return variable


# --- Diff and apply -------------------------------------------------------------------------------


@dataclass
class Change:
    what: str  # "create", "update", "delete"
    label: str  # "plan basic", "route chat", "target chat/openai"
    details: list[str] = field(default_factory=list)
    apply: object = None  # a function making the change

    def __str__(self) -> str:
        sign = {"create": "+", "update": "~", "delete": "-"}[self.what]
        lines = [f"{sign} {self.what} {self.label}"]
        lines += [f"    {detail}" for detail in self.details]
        return "\n".join(lines)


def _differences(current, wanted, fields) -> list[str]:
    return [
        f"{name}: {getattr(current, name)!r} -> {getattr(wanted, name)!r}"
        for name in fields
        if getattr(current, name) != getattr(wanted, name)
    ]


def changes(desired: Desired) -> list[Change]:
    """What applying the file would change, in the order it must be done."""
    found: list[Change] = []
    plans = {plan.name: plan for plan in QuotaPlan.objects.all()}
    for name, wanted in desired.plans.items():
        current = plans.get(name)
        if current is None:
            found.append(Change("create", f"plan {name}", apply=_plan_saver(None, _fields(wanted, PLAN_FIELDS))))
        elif details := _differences(current, wanted, Limits.LIMIT_FIELDS):
            found.append(Change("update", f"plan {name}", details, _plan_saver(current, _fields(wanted, PLAN_FIELDS))))

    routes = {route.name: route for route in Route.objects.select_related("fallback", "quota_plan")}
    for name, (wanted, _fallback, _plan, targets, _item) in desired.routes.items():
        current = routes.get(name)
        fields = [f for f in ROUTE_FIELDS if f != "name"]
        if current is None:
            found.append(Change("create", f"route {name}", apply=_route_saver(None, _fields(wanted, ROUTE_FIELDS))))
        elif details := _differences(current, wanted, fields):
            found.append(Change("update", f"route {name}", details, _route_saver(current, _fields(wanted, fields))))
        found += _target_changes(name, current, targets)

    # Links by name, once every route and plan exists.
    for name, (_wanted, fallback, plan, _targets, _item) in desired.routes.items():
        current = routes.get(name)
        had = (
            (current.fallback.name if current and current.fallback else None),
            (current.quota_plan.name if current and current.quota_plan else None),
        )
        if had != (fallback, plan):
            pairs = zip(ROUTE_LINKS, had, (fallback, plan), strict=True)
            details = [f"{label}: {old!r} -> {new!r}" for label, old, new in pairs if old != new]
            found.append(Change("update", f"route {name}", details, _linker(name, fallback, plan)))

    for name, route in routes.items():
        if name not in desired.routes:
            keys = route.api_keys.count()
            details = [f"{keys} key(s) lose this route"] if keys else []
            found.append(Change("delete", f"route {name}", details, _deleter(route_service.delete_route, route)))
    for name, plan in plans.items():
        if name not in desired.plans:
            users = plan.api_keys.count() + plan.routes.count()
            details = [f"{users} key(s) or route(s) lose this plan"] if users else []
            found.append(Change("delete", f"plan {name}", details, _deleter(plans.delete_plan, plan)))
    return found + _spend_changes(desired)


def _spend_changes(desired: Desired) -> list[Change]:
    """Teams (whole, when the file lists them) and prices (added or changed, never deleted)."""
    found: list[Change] = []
    if desired.teams is not None:
        teams = {team.name: team for team in Team.objects.all()}
        for name, wanted in desired.teams.items():
            current = teams.get(name)
            fields = _fields(wanted, Budgets.BUDGET_FIELDS)
            if current is None:
                found.append(Change("create", f"team {name}", apply=_team_saver(None, name, fields)))
            elif details := _differences(current, wanted, Budgets.BUDGET_FIELDS):
                found.append(Change("update", f"team {name}", details, _team_saver(current, name, fields)))
        for name, team in teams.items():
            if name not in desired.teams:
                keys = team.keys.count()
                details = [f"{keys} key(s) leave this team"] if keys else []
                found.append(Change("delete", f"team {name}", details, _deleter(spend.delete_team, team)))
    plan = spend.plan_prices([entry for entry, _ in desired.prices])
    for action, entry, existing in plan:
        if action == "same":
            continue
        details = []
        if existing is not None and action == "change":
            details = [f"was {existing.input_per_million} in / {existing.output_per_million} out per 1M"]
        label = f"price {entry.describe()}"
        found.append(
            Change("create" if action == "add" else "update", label, details, _price_saver(action, entry, existing))
        )
    return found


def _team_saver(current: Team | None, name: str, fields: dict):
    return lambda: spend.save_team(name, team=current, **fields)


def _price_saver(action, entry, existing):
    return lambda: spend.apply_prices([(action, entry, existing)])


def _target_changes(route_name: str, route: Route | None, targets: list) -> list[Change]:
    found = []
    current = {t.name: t for t in route.targets.all()} if route else {}
    for wanted, entry in targets:
        label = f"target {route_name}/{wanted.name}"
        old = current.get(wanted.name)
        given = {name: getattr(wanted, name) for name in TARGET_FIELDS}
        credential, note = _credential(wanted, old, entry)
        if credential is not None:
            given["credential_value"] = credential
        try:  # the target as the service layer will save it: its rules (a credential follows its host)
            checked = route_service.check_target(old, given, route)
        except ServiceError as exc:
            raise _config_error(exc, entry, label) from None
        if old is None:
            found.append(Change("create", label, [note] if note else [], _target_saver(route_name, None, given)))
            continue
        details = _differences(old, checked, [f for f in TARGET_FIELDS if f != "name"])
        if old.credential_value != checked.credential_value:
            if not checked.credential_value:
                details.append("credential_value: (removed: the URL moved to another host)")
            else:
                details.append(f"credential_value: (changed, from ${wanted.credential_reference})")
        if details:
            found.append(Change("update", label, details, _target_saver(route_name, old, given)))
    for name, old in current.items():
        if name not in {wanted.name for wanted, _ in targets}:
            found.append(
                Change("delete", f"target {route_name}/{name}", apply=_deleter(route_service.delete_target, old))
            )
    return found


def _config_error(exc: ServiceError, entry: Located, what: str) -> ConfigError:
    """The service layer's refusal, at the line of the first field it names."""
    name, messages = next(iter(exc.errors.items()))
    key = name if name in entry else None
    label = f"{name}: " if name in entry or name in TARGET_FIELDS else ""
    return ConfigError(f"{what}: {label}{' '.join(messages)}", _where(entry, key))


def _credential(wanted: UpstreamTarget, old: UpstreamTarget | None, entry: Located) -> tuple[str | None, str]:
    """The credential the file gives ("" for none; None: not given, so the stored one may stay),
    and a note for the diff."""
    variable = wanted.credential_reference
    if not variable:
        return "", ""
    value = os.environ.get(variable)
    if value:
        return value, f"credential_value from ${variable}"
    if old is not None and old.credential_value:
        return None, ""  # unset here: the service layer keeps the stored one if it may
    raise ConfigError(
        f"target {wanted.name}: the environment variable {variable} is not set (a new credential needs it)",
        _where(entry, "credential_value"),
    )


def _fields(wanted, names) -> dict:
    return {name: getattr(wanted, name) for name in names}


def _route_saver(current: Route | None, fields: dict):
    return lambda: route_service.save_route(current, fields)


def _target_saver(route_name: str, old: UpstreamTarget | None, given: dict):
    return lambda: route_service.save_target(Route.objects.get(name=route_name), old, given)


def _plan_saver(current: QuotaPlan | None, fields: dict):
    return lambda: plans.save_plan(current, fields)


def _deleter(delete, obj):
    return lambda: delete(obj)


def _linker(route_name: str, fallback: str | None, plan: str | None):
    def link():
        links = {
            "fallback": Route.objects.get(name=fallback) if fallback else None,
            "quota_plan": QuotaPlan.objects.get(name=plan) if plan else None,
        }
        route_service.save_route(Route.objects.get(name=route_name), links)

    return link


def apply(found: list[Change]) -> list[str]:
    """Every change or none: one transaction. Each object is saved on its own (signals fire).
    Returns the saved configuration's warnings (the service layer's), one line each."""
    with transaction.atomic():
        for change in found:
            change.apply()
    return _warning_lines(route_service.configuration_warnings())


def warnings(desired: Desired) -> list[str]:
    """The file's configuration's warnings, before it is applied (the file holds every route)."""
    routes = (
        (route, sum(1 for target, _ in targets if target.enabled))
        for route, _fallback, _plan, targets, _item in desired.routes.values()
    )
    return _warning_lines(route_service.warnings_for(routes))


def _warning_lines(found: dict[str, list[str]]) -> list[str]:
    return [f"route {name}: {warning}" for name in sorted(found) for warning in found[name]]
