"""The log explorer's pages and the dashboard's range form.

The explorer's filters are the request log's one FilterSet (routes_admin/filtersets.py), shared
with the management API; this module pages its rows. Pages run newest first on (created, id), so a
page is an index range (log_created_idx, or the filter's own index), never an OFFSET.
"""

import base64
import binascii
from datetime import UTC, datetime, timedelta

from django import forms
from django.utils import timezone
from django.utils.http import urlencode

from routes_admin.filtersets import RequestLogFilterSet
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


def encode_cursor(row) -> str:
    text = f"{row.created.isoformat()}|{row.pk}"
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, int] | None:
    """The (created, id) a cursor names, or None when it is not one this page made: undecodable,
    a time without its offset or outside what the database holds, an id out of range."""
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created, pk = text.split("|")
        moment, number = datetime.fromisoformat(created), int(pk)
        if moment.tzinfo is None or not 0 < number <= MAX_ID:
            return None
        return moment.astimezone(UTC), number
    except (ValueError, UnicodeDecodeError, binascii.Error, OverflowError):
        return None


def page(rows, after: tuple[datetime, int] | None = None) -> tuple[list, str]:
    """Up to PAGE_SIZE rows, newest first, after the cursor's (created, id); and the cursor of the
    next page ("" at the end)."""
    if after:
        created, pk = after
        # (created, id) < (cursor): the range stays on the created index; ties are broken by id.
        rows = rows.filter(created__lte=created).exclude(created=created, id__gte=pk)
    found = list(rows.select_related("api_key").order_by("-created", "-id")[: PAGE_SIZE + 1])
    more = len(found) > PAGE_SIZE
    found = found[:PAGE_SIZE]
    return found, encode_cursor(found[-1]) if more else ""


class RangeForm(forms.Form):
    """The dashboard's custom range (in the user's time zone)."""

    start = forms.DateTimeField(widget=forms.DateTimeInput(attrs={"type": "datetime-local"}))
    end = forms.DateTimeField(widget=forms.DateTimeInput(attrs={"type": "datetime-local"}))

    def clean(self):
        data = super().clean()
        if data.get("start") and data.get("end") and data["start"] >= data["end"]:
            raise forms.ValidationError("The start of the range must come before its end.")
        return data
