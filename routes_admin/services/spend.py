"""Spending: the price list, teams and budgets: check, save and delete them.

The admin, the management API, the configuration file and `manage.py import_prices` all call
these functions, so a price or budget refused in one place is refused everywhere with the same
message (a ServiceError, like the rest of the service layer). Each saves through the model, so
the change history (django-auditlog) and the change signal (the proxy reloads its copy after the
commit) follow by themselves. Budgets on keys and routes are fields of those (services/keys.py,
services/routes.py); the model's validators hold the budget rules for all three owners.

The price sheet helpers (`read_price_sheet`, `check_price_sheet`, `plan_prices`) raise Django's
ValidationError, one message per bad line; `apply_prices` saves through `save_price`.
"""

import csv
import io
import json
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from ..models import APIKey, Budgets, ModelPrice, Route, Team, UpstreamTarget
from ..pricing import BUDGET_DIGITS, BUDGET_PLACES, check_currency, parse_money
from .errors import ServiceError, checked

PRICE_COLUMNS = ("model", "target", "input_per_million", "output_per_million", "per_call", "valid_from")


# --- prices -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PriceEntry:
    """One line of a price sheet, checked: what the price list should say."""

    model: str
    target: UpstreamTarget | None
    input_per_million: Decimal
    output_per_million: Decimal
    per_call: Decimal | None
    valid_from: datetime | None  # None: from the moment it is applied

    def same_price(self, price: ModelPrice) -> bool:
        return (
            price.input_per_million == self.input_per_million
            and price.output_per_million == self.output_per_million
            and price.per_call == self.per_call
        )

    def describe(self) -> str:
        where = f" on {self.target}" if self.target else ""
        per_call = f" + {self.per_call} per call" if self.per_call is not None else ""
        return f"{self.model}{where}: {self.input_per_million} in / {self.output_per_million} out per 1M{per_call}"


def find_target(text) -> UpstreamTarget | None:
    """A target named "route/target" (or by id); None for an empty value."""
    if text in (None, ""):
        return None
    if isinstance(text, int) or (isinstance(text, str) and text.isdigit()):
        found = UpstreamTarget.objects.select_related("route").filter(id=int(text)).first()
    else:
        route_name, _, target_name = str(text).partition("/")
        found = UpstreamTarget.objects.select_related("route").filter(route__name=route_name, name=target_name).first()
    if found is None:
        raise ValidationError(f"No target {text!r} (name it route/target, as the admin lists it).")
    return found


def check_price_entry(data: dict) -> PriceEntry:
    """A price from plain values (text, int or Decimal), or a ValidationError naming what is wrong."""
    unknown = set(data) - set(PRICE_COLUMNS) - {"currency"}
    if unknown:
        raise ValidationError(f"Unknown field(s) {', '.join(sorted(unknown))}; a price has {', '.join(PRICE_COLUMNS)}.")
    currency = str(data.get("currency") or "").strip()
    if currency:
        check_currency(currency)
        if currency != settings.GATEWAY_CURRENCY:
            raise ValidationError(
                f"This price is in {currency}, but the gateway counts in {settings.GATEWAY_CURRENCY} "
                "(GATEWAY_CURRENCY); convert it first."
            )
    model = str(data.get("model") or "").strip()
    if not model:
        raise ValidationError("A price needs the upstream model name.")
    if len(model) > ModelPrice._meta.get_field("model").max_length:
        raise ValidationError("The model name is longer than 200 characters.")
    for required in ("input_per_million", "output_per_million"):
        if data.get(required) in (None, ""):
            raise ValidationError(f"A price needs {required}.")
    per_call = data.get("per_call")
    valid_from = data.get("valid_from")
    if isinstance(valid_from, str):
        valid_from = valid_from.strip()
        parsed = parse_datetime(valid_from) if valid_from else None
        if valid_from and parsed is None:
            raise ValidationError(f"valid_from {valid_from!r} is not a date and time (like 2026-01-01T00:00:00Z).")
        valid_from = parsed
    if valid_from is not None and timezone.is_naive(valid_from):
        valid_from = timezone.make_aware(valid_from)
    return PriceEntry(
        model=model,
        target=find_target(data.get("target")),
        input_per_million=parse_money(data["input_per_million"], "input price"),
        output_per_million=parse_money(data["output_per_million"], "output price"),
        per_call=None if per_call in (None, "") else parse_money(per_call, "per-call price"),
        valid_from=valid_from,
    )


def price_in_force(model: str, target: UpstreamTarget | None, at: datetime | None = None) -> ModelPrice | None:
    at = at or timezone.now()
    return ModelPrice.objects.filter(model=model, target=target, valid_from__lte=at).order_by("-valid_from").first()


def plan_prices(entries: list[PriceEntry]) -> list[tuple[str, PriceEntry, ModelPrice | None]]:
    """What applying these entries would do: ("add" | "change" | "same", entry, the price it replaces).

    An entry without valid_from is a new price from now on, unless the price in force already
    says the same (so importing one sheet twice changes nothing). An entry with valid_from
    changes the entry starting then, or adds it.
    """
    plan = []
    for entry in entries:
        if entry.valid_from is None:
            current = price_in_force(entry.model, entry.target)
            plan.append(("same" if current and entry.same_price(current) else "add", entry, current))
        else:
            existing = ModelPrice.objects.filter(
                model=entry.model, target=entry.target, valid_from=entry.valid_from
            ).first()
            if existing is None:
                plan.append(("add", entry, None))
            else:
                plan.append(("same" if entry.same_price(existing) else "change", entry, existing))
    return plan


@transaction.atomic
def apply_prices(plan) -> int:
    """Save the additions and changes of a plan in one transaction; returns how many."""
    done = 0
    now = timezone.now()
    for action, entry, existing in plan:
        if action == "same":
            continue
        save_price(
            existing if action == "change" else None,
            {
                "model": entry.model,
                "target": entry.target,
                "input_per_million": entry.input_per_million,
                "output_per_million": entry.output_per_million,
                "per_call": entry.per_call,
                "valid_from": entry.valid_from or now,
            },
        )
        done += 1
    return done


PRICE_FIELDS = ("model", "target", "input_per_million", "output_per_million", "per_call", "valid_from")


def check_price(price: ModelPrice | None, fields: dict) -> ModelPrice:
    """The price as it will be saved: `price` (or a new one) with `fields` applied, checked.

    A price already charged stays as it was: changing the amounts of a price whose start has
    passed is allowed (the cost of each call is stored on its log row, so calls already made keep
    theirs), but a clear record of it is in the history."""
    unknown = set(fields) - set(PRICE_FIELDS)
    if unknown:
        raise ServiceError({name: ["Not a field of a price."] for name in sorted(unknown)})
    price = price if price is not None else ModelPrice()
    for name, value in fields.items():
        setattr(price, name, value)
    if price.valid_from is None:
        price.valid_from = timezone.now()
    checked(price, exclude=("created",))
    return price


@transaction.atomic
def save_price(price: ModelPrice | None, fields: dict) -> ModelPrice:
    """Create (price=None) or change a price (the admin's, the API's, the file's and the sheet's path)."""
    price = check_price(price, fields)
    price.save()
    return price


@transaction.atomic
def delete_price(price: ModelPrice) -> None:
    """Remove a price: calls already made keep the cost stored on their rows; later calls of that
    model use the previous price in force, or show "no price"."""
    price.delete()


def read_price_sheet(text: str, name: str = "") -> list[dict]:
    """The lines of a CSV or JSON price sheet as dicts of text; JSON numbers are read as Decimals."""
    stripped = text.lstrip()
    if name.endswith(".json") or stripped.startswith(("[", "{")):
        try:
            data = json.loads(text, parse_float=Decimal)
        except json.JSONDecodeError as exc:
            raise ValidationError(f"The sheet is not valid JSON: {exc}.") from None
        currency = None
        if isinstance(data, dict):
            currency = data.get("currency")
            data = data.get("prices")
        if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
            raise ValidationError('A JSON sheet is a list of prices, or {"currency": ..., "prices": [...]}.')
        if currency:
            data = [{"currency": currency, **item} for item in data]
        return data
    reader = csv.DictReader(io.StringIO(text))
    if not reader.fieldnames or "model" not in reader.fieldnames:
        raise ValidationError(f"A CSV sheet starts with a header line naming its columns: {', '.join(PRICE_COLUMNS)}.")
    return [{k: v for k, v in row.items() if k is not None} for row in reader]


def check_price_sheet(lines: list[dict]) -> list[PriceEntry]:
    """Every line checked; one ValidationError listing each bad line (nothing applies then)."""
    entries, errors = [], []
    for number, line in enumerate(lines, start=1):
        try:
            entries.append(check_price_entry(line))
        except ValidationError as exc:
            errors.append(f"price {number}: {' '.join(exc.messages)}")
    seen = set()
    for entry in entries:
        key = (entry.model, entry.target.id if entry.target else None, entry.valid_from)
        if key in seen:
            errors.append(f"{entry.model} is priced twice for the same target and start.")
        seen.add(key)
    if errors:
        raise ValidationError(errors)
    return entries


# --- teams and budgets ----------------------------------------------------------------------------
def check_budgets(data: dict) -> dict:
    """budget_per_day / budget_per_month from plain values: empty means none, else positive decimals."""
    checked = {}
    for name in Budgets.BUDGET_FIELDS:
        if name not in data:
            continue
        value = data[name]
        if value in (None, ""):
            checked[name] = None
            continue
        amount = parse_money(value, name.replace("_", " "), BUDGET_PLACES, BUDGET_DIGITS)
        if amount == 0:
            raise ValidationError(
                f"A {name.replace('_', ' ')} of 0 would refuse every call; leave it empty for no budget."
            )
        checked[name] = amount
    return checked


TEAM_FIELDS = ("name", *Team.LIMIT_FIELDS, *Budgets.SPEND_FIELDS)


def check_team(team: Team | None, fields: dict) -> Team:
    """The team as it will be saved: `team` (or a new one) with `fields` applied, checked: its call
    limits (whole numbers, empty for none), budgets and alert thresholds."""
    unknown = set(fields) - set(TEAM_FIELDS)
    if unknown:
        raise ServiceError({name: ["Not a field of a team."] for name in sorted(unknown)})
    team = team if team is not None else Team()
    try:
        budgets = check_budgets(fields)
    except ValidationError as exc:
        raise ServiceError.of(exc) from None
    for name, value in {**fields, **budgets}.items():
        setattr(team, name, value)
    checked(team, exclude=("created",))
    return team


@transaction.atomic
def save_team(name: str | None = None, *, team: Team | None = None, **fields) -> Team:
    """Create (team=None) or change a team; `name` None keeps a team's name."""
    if name is not None:
        fields["name"] = name
    team = check_team(team, fields)
    team.save()
    return team


@transaction.atomic
def delete_team(team: Team) -> None:
    """Delete a team: its keys stay, without a team (calls in flight settle on the key, and the
    rows already written keep the team's name)."""
    team.delete()


def set_budgets(owner: APIKey | Team | Route, data: dict) -> None:
    """Set a key's, team's or route's budgets (and save it)."""
    try:
        budgets = check_budgets(data)
    except ValidationError as exc:
        raise ServiceError.of(exc) from None
    for name, value in budgets.items():
        setattr(owner, name, value)
    checked(owner, exclude=("created", "updated", "prefix", "hashed_secret"))
    with transaction.atomic():
        owner.save()


@transaction.atomic
def join_team(key: APIKey, team: Team | None) -> None:
    """A key belongs to at most one team: joining one leaves the previous."""
    key.team = team
    key.save(update_fields=["team"])
