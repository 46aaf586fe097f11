"""Money: prices per million tokens, the cost of one call, budgets. Decimals only, never floats.

A plain module of the data layer (it imports nothing of ours): the models use its validators,
the proxy its cost formula, the console its explanation of a cost, so all three say the same.

Prices are stored with PRICE_PLACES decimal places and costs with COST_PLACES: a cost is
tokens x price / 1,000,000, exact with 6 + 6 places, so no call's cost is ever rounded.
Counters that sum costs (the rollups, the budgets' cache counters) keep whole picos (10^-12 of
the currency unit), integers that add exactly on every database and in Redis.
"""

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation

from django.core.exceptions import ValidationError
from django.core.validators import validate_email

PRICE_PLACES = 6
PRICE_DIGITS = 18  # up to 999,999,999,999.999999 per million tokens
COST_PLACES = 12
COST_DIGITS = 24
BUDGET_PLACES = 6
BUDGET_DIGITS = 18
PICO = Decimal(1).scaleb(-COST_PLACES)
MILLION = Decimal(1_000_000)
DEFAULT_MAX_TOKENS = 1000  # output tokens a budget reserves for a call without max_tokens, unless its route says

# ISO 4217 codes in use: GATEWAY_CURRENCY must be one of them (a typo must not label every cost).
CURRENCIES = frozenset(
    """AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BRL BSD BTN BWP BYN BZD
    CAD CDF CHF CLP CNY COP CRC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP GEL GHS GIP GMD GNF
    GTQ GYD HKD HNL HTG HUF IDR ILS INR IQD IRR ISK JMD JOD JPY KES KGS KHR KMF KPW KRW KWD KYD KZT LAK LBP
    LKR LRD LSL LYD MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB
    PEN PGK PHP PKR PLN PYG QAR RON RSD RUB RWF SAR SBD SCR SDG SEK SGD SHP SLE SOS SRD SSP STN SVC SYP SZL
    THB TJS TMT TND TOP TRY TTD TWD TZS UAH UGX USD UYU UZS VES VND VUV WST XAF XCD XOF XPF YER ZAR ZMW ZWL""".split()
)


def check_currency(code: str) -> str:
    if code not in CURRENCIES:
        raise ValidationError(f"{code!r} is not an ISO 4217 currency code (for example USD, EUR, GBP).")
    return code


def parse_money(value, what: str = "price", places: int = PRICE_PLACES, digits: int = PRICE_DIGITS) -> Decimal:
    """A money amount from text, an int or a Decimal, or a ValidationError that says what is wrong.

    Floats are refused: 0.1 as a float is not 0.1, and a price list must say what it means.
    """
    if isinstance(value, bool) or isinstance(value, float):
        raise ValidationError(f'The {what} must be given as a decimal string (like "0.15"), not a float: {value!r}.')
    if isinstance(value, str):
        value = value.strip()
    try:
        amount = Decimal(value)
    except (InvalidOperation, TypeError, ValueError):
        raise ValidationError(f"The {what} {value!r} is not a number.") from None
    check_amount(amount, what, places, digits)
    return amount


def check_amount(amount: Decimal, what: str = "price", places: int = PRICE_PLACES, digits: int = PRICE_DIGITS):
    if not amount.is_finite():
        raise ValidationError(f"The {what} {amount} is not a number.")
    if amount < 0:
        raise ValidationError(f"The {what} {amount} is negative; prices and budgets are zero or more.")
    if amount.as_tuple().exponent < -places and amount != amount.quantize(Decimal(1).scaleb(-places)):
        raise ValidationError(
            f"The {what} {amount} has more than {places} decimal places; the gateway stores {places} "
            "and would not round it silently."
        )
    if abs(amount) >= Decimal(10) ** (digits - places):
        raise ValidationError(f"The {what} {amount} is too large (at most {digits - places} digits before the point).")


def check_price(value) -> None:
    """Model field validator: a price per million tokens, or per call."""
    check_amount(Decimal(value), "price")


def check_budget(value) -> None:
    """Model field validator: a budget is a positive amount (empty means none; zero would refuse everything)."""
    amount = Decimal(value)
    check_amount(amount, "budget", BUDGET_PLACES, BUDGET_DIGITS)
    if amount == 0:
        raise ValidationError(
            "A budget of 0 would refuse every call; leave it empty for no budget, or disable the key."
        )


NO_ALERTS = "none"
MAX_THRESHOLDS = 10


def parse_thresholds(text: str | None) -> tuple[int, ...] | None:
    """Alert thresholds as written on a key, team or route: "50, 80,100" -> (50, 80, 100), sorted,
    each once; "" -> None (the gateway's default, GATEWAY_BUDGET_ALERT_THRESHOLDS); "none" -> ()."""
    text = "" if text is None else str(text).strip()
    if not text:
        return None
    if text.lower() == NO_ALERTS:
        return ()
    found = set()
    for item in text.replace(";", ",").split(","):
        item = item.strip().removesuffix("%").strip()
        if not item.isdigit() or not 1 <= int(item) <= 100:
            raise ValidationError(
                f"Alert thresholds are whole percentages from 1 to 100, separated by commas (like 50,80,100), "
                f"or {NO_ALERTS}; {item!r} is not one."
            )
        found.add(int(item))
    if len(found) > MAX_THRESHOLDS:
        raise ValidationError(f"At most {MAX_THRESHOLDS} alert thresholds.")
    return tuple(sorted(found))


def check_alert_thresholds(value) -> None:
    """Model field validator: see parse_thresholds."""
    parse_thresholds(value)


MAX_ALERT_EMAILS = 20


def parse_emails(text: str | None) -> list[str]:
    """Alert addresses as written on a key, team or route: "a@example.com, b@example.com" -> the
    addresses, in order, each once; "" -> [] (the gateway's, GATEWAY_BUDGET_ALERT_EMAILS)."""
    found = []
    for address in str(text or "").replace(";", ",").split(","):
        address = address.strip()
        if not address or address in found:
            continue
        try:
            validate_email(address)
        except ValidationError:
            raise ValidationError(
                f"Alert emails are addresses separated by commas (like finance@example.com, "
                f"lead@example.com); {address!r} is not one."
            ) from None
        found.append(address)
    if len(found) > MAX_ALERT_EMAILS:
        raise ValidationError(f"At most {MAX_ALERT_EMAILS} alert email addresses.")
    return found


def check_alert_emails(value) -> None:
    """Model field validator: see parse_emails."""
    parse_emails(value)


def crossed(before: int, after: int, budget: int, thresholds) -> list[int]:
    """The thresholds (percent) a spend going from `before` to `after` crossed (picos; budget > 0):
    each T with before < T % of the budget <= after. Integers only: exact at every size."""
    return [t for t in thresholds if before * 100 < t * budget <= after * 100]


@dataclass(frozen=True)
class Price:
    """One price list entry as the proxy holds it (proxy/config.py)."""

    id: int
    model: str
    target_id: int | None
    input: Decimal  # per million input (prompt) tokens
    output: Decimal  # per million output (completion) tokens
    per_call: Decimal | None
    valid_from: datetime
    # The same in whole picos per token (a price has PRICE_PLACES = 6 places per million tokens,
    # so tokens x these is the exact cost in picos) and per call: see picos().
    input_picos: int = field(init=False, repr=False, compare=False)
    output_picos: int = field(init=False, repr=False, compare=False)
    per_call_picos: int = field(init=False, repr=False, compare=False)
    detail: dict = field(init=False, repr=False, compare=False)  # see as_detail

    def __post_init__(self):
        set_field = object.__setattr__  # frozen: the derived fields are set once, here
        set_field(self, "input_picos", to_picos(self.input / MILLION))
        set_field(self, "output_picos", to_picos(self.output / MILLION))
        set_field(self, "per_call_picos", to_picos(self.per_call))
        set_field(
            self,
            "detail",
            {
                "price_id": self.id,
                "input": str(self.input),
                "output": str(self.output),
                "per_call": str(self.per_call) if self.per_call is not None else None,
            },
        )

    def picos(self, prompt_tokens: int, completion_tokens: int, per_call: bool) -> int:
        """prompt x input/M + completion x output/M (+ the per-call price), in whole picos: exact."""
        amount = prompt_tokens * self.input_picos + completion_tokens * self.output_picos
        return amount + self.per_call_picos if per_call else amount

    def as_detail(self) -> dict:
        """What a log row keeps of the price it was charged, so its cost stays explainable: a new
        dict for each call."""
        return self.detail.copy()


def cost(price: Price, prompt_tokens: int, completion_tokens: int, answered: bool) -> Decimal:
    """prompt x input/M + completion x output/M (+ the per-call price when an upstream answered), exact."""
    return from_picos(price.picos(prompt_tokens, completion_tokens, answered))


def to_picos(amount: Decimal | None) -> int:
    return 0 if amount is None else int(amount.scaleb(COST_PLACES).to_integral_value())


def from_picos(picos: int) -> Decimal:
    return Decimal(int(picos)).scaleb(-COST_PLACES).quantize(PICO)


def plain(amount) -> str:
    """A Decimal without its trailing zeros and never in exponent form: 0.150000 -> 0.15."""
    if amount is None:
        return ""
    amount = Decimal(amount)
    text = format(amount.normalize(), "f")
    return text


def explain(detail: dict | None, prompt_tokens, completion_tokens, cost_value, currency: str) -> str:
    """The cost of a call as a line an auditor can redo by hand, or why it has none."""
    if cost_value is None:
        return "no price"
    if not detail:
        return f"{plain(cost_value)} {currency}"
    parts = [
        f"{prompt_tokens or 0} in × {plain(detail['input'])}/M",
        f"{completion_tokens or 0} out × {plain(detail['output'])}/M",
    ]
    if detail.get("per_call") is not None and detail.get("per_call_applied"):
        parts.append(f"{plain(detail['per_call'])} per call")
    return " + ".join(parts) + f" = {plain(cost_value)} {currency}"


class PriceList:
    """Every price entry, looked up by model, target and time without a query (the proxy's copy)."""

    def __init__(self, prices=()):
        by_model: dict[str, list[Price]] = {}
        for price in prices:
            by_model.setdefault(price.model, []).append(price)
        self._by_model = {
            model: sorted(found, key=lambda p: p.valid_from, reverse=True) for model, found in by_model.items()
        }

    def __bool__(self) -> bool:
        return bool(self._by_model)

    def find(self, model: str, target_id: int | None, at: datetime) -> Price | None:
        """The price in force at `at`: the target's own if it has one then, else the model's general one."""
        general = None
        for price in self._by_model.get(model, ()):
            if price.valid_from > at:
                continue
            if price.target_id is not None:
                if price.target_id == target_id:
                    return price
            elif general is None:
                general = price
                if target_id is None:
                    return price
        return general
