"""Amounts as the console shows them: exact decimals without trailing zeros, in GATEWAY_CURRENCY."""

from decimal import Decimal

from django import template
from django.conf import settings

from routes_admin.pricing import plain

register = template.Library()


@register.filter
def money(amount) -> str:
    """0.001794000000 -> "0.001794 USD"; None -> "no price"."""
    if amount is None or amount == "":
        return "no price"
    return f"{plain(Decimal(amount))} {settings.GATEWAY_CURRENCY}"


@register.filter
def amount(value) -> str:
    """The number alone, for a column whose heading names the currency."""
    return "" if value is None else plain(Decimal(value))


@register.simple_tag
def currency() -> str:
    return settings.GATEWAY_CURRENCY
