"""Step 7's cost: what a call cost, from the tokens the upstream reported and the price in force
when the call started (the price list is part of the call's configuration snapshot: no query).

The price is looked up for the model sent upstream (after the answering target's alias) and
that target, else the model's general price. A cut stream's estimated tokens give an estimated
cost: the row's usage_estimated marks both. No price: the cost stays None ("no price"), never 0.
The price applied is kept in the row's detail["cost"], so the cost stays explainable after the
price list changes.
"""

from decimal import Decimal

from routes_admin.pricing import COST_DIGITS, COST_PLACES, cost

LARGEST = Decimal(10) ** (COST_DIGITS - COST_PLACES)


def _tokens(usage: dict, name: str) -> int:
    value = usage.get(name)
    return value if type(value) is int and value > 0 else 0


def price_call(call) -> None:
    """Set call.cost (a Decimal, or None without a price) and note the price in call.detail."""
    prices = call.prices
    model = call.upstream_model or call.model
    if not prices or not model:
        return
    target = call.held_target
    price = prices.find(model, target.id if target is not None else None, call.created)
    if price is None:
        return
    usage = call.usage or {}
    answered = target is not None and 0 < call.status < 400
    amount = cost(price, _tokens(usage, "prompt_tokens"), _tokens(usage, "completion_tokens"), answered)
    detail = price.as_detail()
    detail["per_call_applied"] = answered and price.per_call is not None
    if amount >= LARGEST:  # absurd token counts from an upstream: no cost rather than a row the database refuses
        detail["why"] = "the cost is larger than the log can store"
        call.detail["cost"] = detail
        return
    call.cost = amount
    call.detail["cost"] = detail
