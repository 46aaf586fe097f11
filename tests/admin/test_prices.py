"""The price list: decimals only, clear refusals, and import_prices (diff, --yes, idempotent)."""

import json
from datetime import UTC
from decimal import Decimal
from io import StringIO

import pytest
from auditlog.models import LogEntry
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.core.management.base import CommandError

from routes_admin.models import ModelPrice, Team
from routes_admin.pricing import Price, PriceList, cost, explain, parse_money
from routes_admin.services import ServiceError, spend
from tests.factories import make_route, make_target

pytestmark = pytest.mark.django_db

SHEET = "model,target,input_per_million,output_per_million,per_call\ngpt-small,,0.15,0.60,\nbig,,2.5,10,0.001\n"


@pytest.mark.parametrize(
    "value, message",
    [
        ("-0.01", "negative"),
        ("0.0000001", "more than 6 decimal places"),
        ("abc", "is not a number"),
        (0.15, "not a float"),
        ("NaN", "is not a number"),
        ("1e30", "too large"),
    ],
)
def test_bad_prices_are_refused_with_a_clear_message(value, message):
    with pytest.raises(ValidationError) as refused:
        parse_money(value)
    assert message in refused.value.messages[0]


def test_trailing_zeros_beyond_the_stored_places_are_no_extra_precision():
    assert parse_money("0.150000000") == Decimal("0.15")


def test_the_model_refuses_a_negative_price_through_its_validators():
    price = ModelPrice(model="m", input_per_million=Decimal("-1"), output_per_million=Decimal("1"))
    with pytest.raises(ValidationError) as refused:
        price.full_clean()
    assert "negative" in str(refused.value)


def test_a_budget_of_zero_or_below_is_refused():
    for value in ("0", "-5"):
        with pytest.raises(ServiceError):
            spend.save_team("t", budget_per_day=value)
    assert not Team.objects.exists()
    assert spend.save_team("t", budget_per_day="5.50").budget_per_day == Decimal("5.5")


def test_cost_is_exact_and_explained():
    price = Price(1, "m", None, Decimal("0.15"), Decimal("0.60"), None, None)
    amount = cost(price, 812, 96, answered=True)
    assert amount == Decimal("0.0001794")
    detail = {**price.as_detail(), "per_call_applied": True}
    assert explain(detail, 812, 96, amount, "USD") == "812 in × 0.15/M + 96 out × 0.6/M = 0.0001794 USD"
    assert explain(None, 0, 0, None, "USD") == "no price"


def test_the_price_in_force_is_the_latest_started_and_a_target_price_wins():
    from datetime import datetime, timedelta

    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    prices = PriceList(
        [
            Price(1, "m", None, Decimal(1), Decimal(1), None, t0),
            Price(2, "m", None, Decimal(2), Decimal(2), None, t0 + timedelta(days=10)),
            Price(3, "m", 7, Decimal(3), Decimal(3), None, t0 + timedelta(days=5)),
        ]
    )
    assert prices.find("m", None, t0 + timedelta(days=1)).id == 1
    assert prices.find("m", None, t0 + timedelta(days=11)).id == 2
    assert prices.find("m", 7, t0 + timedelta(days=11)).id == 3
    assert prices.find("m", 7, t0 + timedelta(days=1)).id == 1  # the target's price had not started
    assert prices.find("m", None, t0 - timedelta(days=1)) is None
    assert prices.find("other", None, t0) is None


def run(*args) -> str:
    out = StringIO()
    call_command("import_prices", *args, stdout=out)
    return out.getvalue()


def test_import_prices_shows_the_diff_applies_with_yes_and_is_idempotent(tmp_path):
    sheet = tmp_path / "prices.csv"
    sheet.write_text(SHEET)
    shown = run(str(sheet))
    assert "+ gpt-small: 0.15 in / 0.60 out per 1M USD" in shown
    assert "--yes" in shown
    assert not ModelPrice.objects.exists()

    assert "Applied 2 change(s)" in run(str(sheet), "--yes")
    big = ModelPrice.objects.get(model="big")
    assert (big.input_per_million, big.output_per_million, big.per_call) == (
        Decimal("2.5"),
        Decimal(10),
        Decimal("0.001"),
    )
    assert LogEntry.objects.get_for_model(ModelPrice).count() == 2  # in the change history, named by the command
    assert LogEntry.objects.get_for_model(ModelPrice).first().additional_data == {"command": "import_prices"}

    again = run(str(sheet), "--yes")
    assert "Nothing to change" in again
    assert ModelPrice.objects.count() == 2

    sheet.write_text(SHEET.replace("0.15,0.60", "0.20,0.80"))
    assert "~ gpt-small: 0.20 in / 0.80 out per 1M USD (was 0.150000 in / 0.600000 out)" in run(str(sheet), "--yes")
    assert ModelPrice.objects.filter(model="gpt-small").count() == 2  # the old price stays for the calls it priced


def test_a_json_sheet_reads_numbers_as_decimals_and_targets_by_name(tmp_path, upstream):
    route = make_route(name="chat")
    make_target(route, upstream.url, name="a")
    sheet = tmp_path / "prices.json"
    sheet.write_text(
        json.dumps({"currency": "USD", "prices": [{"model": "m", "target": "chat/a"}]}).replace(
            '"target"', '"input_per_million": 0.1, "output_per_million": 0.3, "target"'
        )
    )
    run(str(sheet), "--yes")
    price = ModelPrice.objects.get()
    assert price.input_per_million == Decimal("0.1") and price.target.name == "a"


def test_a_sheet_with_a_bad_line_applies_nothing_and_names_every_bad_line(tmp_path):
    sheet = tmp_path / "prices.csv"
    sheet.write_text(SHEET + "neg,,-1,1,\nwide,,0.1234567,1,\nfoo,nowhere/x,1,1,\n")
    with pytest.raises(CommandError) as refused:
        run(str(sheet), "--yes")
    message = str(refused.value)
    assert "price 3:" in message and "negative" in message
    assert "price 4:" in message and "more than 6 decimal places" in message
    assert "price 5:" in message and "No target 'nowhere/x'" in message
    assert not ModelPrice.objects.exists()


def test_a_sheet_in_another_currency_is_refused(tmp_path):
    sheet = tmp_path / "prices.json"
    sheet.write_text('[{"model": "m", "input_per_million": "1", "output_per_million": "1", "currency": "EUR"}]')
    with pytest.raises(CommandError, match="in EUR, but the gateway counts in USD"):
        run(str(sheet), "--yes")
    sheet.write_text('[{"model": "m", "input_per_million": "1", "output_per_million": "1", "currency": "XYZ"}]')
    with pytest.raises(CommandError, match="not an ISO 4217 currency"):
        run(str(sheet), "--yes")
    assert not ModelPrice.objects.exists()
