"""The log explorer's pages and the dashboard's range form.

The explorer's filters are the request log's one FilterSet (routes_admin/filtersets.py), shared
with the management API; this module pages its rows. Pages run newest first on (created, id), so a
page is an index range (log_created_idx, or the filter's own index), never an OFFSET.
"""

import base64
import binascii
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation

from django import forms
from django.db.models import Q
from django.utils import timezone
from django.utils.http import urlencode

from routes_admin.filtersets import GROUPS, RequestLogFilterSet
from routes_admin.models import RequestLog

PAGE_SIZE = 50
MAX_ID = 2**63 - 1  # the largest id the database holds: a larger one in a cursor would overflow the query
# The filters the explorer's form shows, in this order; the FilterSet's other filters (the API's
# ids, method, status bounds) still apply when a link gives them.
SHOWN = (
    "created_after", "created_before", "key", "route_contains", "model_contains", "status", "min_latency", "min_cost",
    "team", "request_id", "error_type", "limit",
)  # fmt: skip
# The time ranges offered at once: the dashboard's presets, and the explorer's links that set its range.
RANGES = {"1h": timedelta(hours=1), "24h": timedelta(hours=24), "7d": timedelta(days=7)}


def explorer_filters(query) -> RequestLogFilterSet:
    return RequestLogFilterSet(query, queryset=RequestLog.objects.order_by())


def active(filterset: RequestLogFilterSet) -> dict:
    """The filters in use (name -> value as typed), for links and the export."""
    return {name: filterset.data[name] for name in filterset.form.fields if filterset.data.get(name)}


def presets(active_filters: dict) -> list[tuple[str, str]]:
    """(name, query) for each of RANGES: the filters in use, from that long ago until now. The
    start is written in the current time zone, as the form's date-time inputs show it."""
    kept = {name: value for name, value in active_filters.items() if name not in ("created_after", "created_before")}
    now = timezone.localtime()
    return [
        (name, urlencode({**kept, "created_after": (now - span).strftime("%Y-%m-%dT%H:%M:%S")}))
        for name, span in RANGES.items()
    ]


def shown_fields(filterset: RequestLogFilterSet) -> list:
    """The form's fields the page shows: the explorer's own, and any other filter in use."""
    form = filterset.form
    extra = [name for name in active(filterset) if name not in SHOWN]
    return [form[name] for name in (*SHOWN, *extra)]


class ViewForm(forms.Form):
    """How the explorer shows the filtered calls: newest first or by cost (within a period), one
    row per call or one per group (team, key, route, model)."""

    order = forms.ChoiceField(
        choices=[("", "newest first"), ("cost", "most expensive first")],
        required=False,
        label="Sort",
        help_text="By cost: within a period (give From); calls without a price are left out.",
    )
    group = forms.ChoiceField(
        choices=[("", "each call"), *((name, f"per {name}") for name in GROUPS)],
        required=False,
        label="Show",
        help_text="Calls summed per team, key, route or model.",
    )

    def __init__(self, data, filterset: RequestLogFilterSet):
        super().__init__(data)
        self.filterset = filterset

    def clean(self):
        data = super().clean()
        if data.get("order") == "cost" and not self.filterset.data.get("created_after"):
            self.add_error("order", "Sorting by cost works within a period: give From (and Until, or until now).")
        return data

    def chosen(self) -> dict:
        """The options in use, for links and the export."""
        return {name: self.data[name] for name in self.fields if self.data.get(name)}


def encode_cursor(row, order: str = "") -> str:
    text = f"{row.created.isoformat()}|{row.pk}"
    if order == "cost":
        text = f"{row.cost}|{text}"
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_cursor(cursor: str, order: str = "") -> tuple | None:
    """The (created, id) a cursor names (with order=cost: (cost, created, id)), or None when it is
    not one this page made: undecodable, a time without its offset or outside what the database
    holds, an id out of range, a cost that is not a number."""
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        parts = text.split("|")
        cost = None
        if order == "cost":
            cost = Decimal(parts.pop(0))
            if not cost.is_finite():
                return None
        created, pk = parts
        moment, number = datetime.fromisoformat(created), int(pk)
        if moment.tzinfo is None or not 0 < number <= MAX_ID:
            return None
        found = (moment.astimezone(UTC), number)
        return (cost, *found) if order == "cost" else found
    except (ValueError, UnicodeDecodeError, binascii.Error, OverflowError, InvalidOperation):
        return None


def page(rows, after: tuple | None = None, order: str = "") -> tuple[list, str]:
    """Up to PAGE_SIZE rows, newest first (order "cost": most expensive first, then newest), after
    the cursor's place; and the cursor of the next page ("" at the end)."""
    if order == "cost":
        rows = rows.filter(cost__isnull=False)
        if after:
            cost, created, pk = after
            rows = rows.filter(
                Q(cost__lt=cost) | Q(cost=cost, created__lt=created) | Q(cost=cost, created=created, id__lt=pk)
            )
        ordering = ("-cost", "-created", "-id")
    else:
        if after:
            created, pk = after
            # (created, id) < (cursor): the range stays on the created index; ties are broken by id.
            rows = rows.filter(created__lte=created).exclude(created=created, id__gte=pk)
        ordering = ("-created", "-id")
    found = list(rows.select_related("api_key").order_by(*ordering)[: PAGE_SIZE + 1])
    more = len(found) > PAGE_SIZE
    found = found[:PAGE_SIZE]
    return found, encode_cursor(found[-1], order) if more else ""


class RangeForm(forms.Form):
    """The dashboard's custom range (in the user's time zone)."""

    start = forms.DateTimeField(widget=forms.DateTimeInput(attrs={"type": "datetime-local"}))
    end = forms.DateTimeField(widget=forms.DateTimeInput(attrs={"type": "datetime-local"}))

    def clean(self):
        data = super().clean()
        if data.get("start") and data.get("end") and data["start"] >= data["end"]:
            raise forms.ValidationError("The start of the range must come before its end.")
        return data
