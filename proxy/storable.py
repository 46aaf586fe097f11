"""Request log values made storable, whatever a client or an upstream sent.

A path with a NUL byte, an 11-letter method or a client address that is not one would make the
database refuse the row (PostgreSQL rejects NUL in text and JSON, values longer than the column,
numbers outside its range, and addresses that are not addresses). The rules come from the
RequestLog fields themselves, so a column that changes keeps its rule.
"""

import functools
import ipaddress
import math

from django.db import models
from django.db.backends.base.operations import BaseDatabaseOperations

from routes_admin.models import RequestLog


def _text(max_length: int | None):
    def clean(value):
        if type(value) is str and value.isascii() and "\x00" not in value:  # the usual case, cheap
            return value if max_length is None or len(value) <= max_length else value[:max_length]
        if value is None:
            return ""
        if not isinstance(value, str):
            value = str(value)
        if "\x00" in value:
            value = value.replace("\x00", "")
        if not value.isascii():  # lone surrogates cannot be encoded: replace them
            value = value.encode("utf-8", "replace").decode("utf-8")
        if max_length is not None and len(value) > max_length:
            value = value[:max_length]
        return value

    return clean


def _integer(low: int, high: int, null: bool):
    def clean(value):
        if type(value) is int and low <= value <= high:  # the usual case, cheap
            return value
        if value is None:
            return None if null else low
        try:
            value = int(value)
        except (TypeError, ValueError, OverflowError):
            return None if null else low
        return low if value < low else high if value > high else value

    return clean


def _float(null: bool):
    def clean(value):
        if value is None:
            return None if null else 0.0
        try:
            value = float(value)
        except (TypeError, ValueError, OverflowError):
            return None if null else 0.0
        return value if math.isfinite(value) else (None if null else 0.0)

    return clean


def _json(value):
    """The same JSON value without NUL characters (PostgreSQL's jsonb refuses \\u0000)."""
    if isinstance(value, str):
        return value.replace("\x00", "") if "\x00" in value else value
    if isinstance(value, list):
        return [_json(item) for item in value]
    if isinstance(value, dict):
        return {_json(str(k)): _json(v) for k, v in value.items()}
    return value


def _ip(value):
    return _address(value) if value and isinstance(value, str) else None


@functools.lru_cache(maxsize=4096)  # parsing costs ~10 µs, and a client's address repeats
def _address(value: str) -> str | None:
    if not value:
        return None
    value = value.split("%", 1)[0]  # an IPv6 zone (fe80::1%eth0) is no part of an inet value
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        return None


def _cleaner(field):
    if isinstance(field, models.ForeignKey):
        return None  # ids the gateway made; a deleted one is the writer's concern (recording.py)
    if isinstance(field, models.GenericIPAddressField):
        return _ip
    if isinstance(field, models.CharField):  # also covers subclasses with a max_length
        return _text(field.max_length)
    if isinstance(field, models.TextField):
        return _text(None)
    if isinstance(field, models.JSONField):
        return _json
    if isinstance(field, models.FloatField):
        return _float(field.null)
    integer_range = BaseDatabaseOperations.integer_field_ranges.get(field.get_internal_type())
    if integer_range:
        return _integer(*integer_range, field.null)
    return None


CLEANERS = [
    (field.attname, cleaner)
    for field in RequestLog._meta.concrete_fields
    if not field.primary_key and (cleaner := _cleaner(field)) is not None
]


def storable(row: dict) -> dict:
    """The row with every value its column can hold (changed in place, and returned)."""
    for name, clean in CLEANERS:
        if name in row:
            row[name] = clean(row[name])
    return row
