"""The log explorer's filters and its cursor, turned into one RequestLog query.

Each filter is served by a named index on RequestLog (routes_admin/models.py says which query
needs which): time by log_created_idx, key by log_key_created_idx, route by log_route_created_idx,
model by log_model_created_idx, request id by log_request_id_idx, error type and limit by their
partial indexes; status 4xx/5xx by log_error_status_idx and latency from 1 s by log_slow_idx (a 2xx
or a faster call is most rows: the newest ones are found at once by log_created_idx).
SQLite uses a partial index only when the query repeats the index's condition word for word, so
the filters add it. Pages run newest first on (created, id), so a page is an index range, never an OFFSET.
"""

import base64
from datetime import datetime

from django import forms
from django.db.models import Q

from routes_admin.models import APIKey, Limits, RequestLog, Route

PAGE_SIZE = 50
MAX_KEYS_MATCHED = 500  # a key search matching more names than this keeps the first ones
ERROR_TYPES = (
    "invalid_api_key",
    "permission_denied",
    "not_found",
    "method_not_allowed",
    "request_too_large",
    "invalid_request_error",
    "rate_limit_exceeded",
    "service_unavailable",
    "upstream_unavailable",
    "upstream_timeout",
    "internal_error",
)
LIMIT_NAMES = (*Limits.LIMIT_FIELDS, *(f"route_{name}" for name in Limits.LIMIT_FIELDS))
STATUS_HELP = "200, 429 or a class: 2xx, 4xx, 5xx"


class CallFilter(forms.Form):
    start = forms.DateTimeField(required=False, widget=forms.DateTimeInput(attrs={"type": "datetime-local"}))
    end = forms.DateTimeField(required=False, widget=forms.DateTimeInput(attrs={"type": "datetime-local"}))
    key = forms.CharField(required=False, max_length=200, help_text="Name, owner or prefix")
    route = forms.CharField(required=False, max_length=100, widget=forms.TextInput(attrs={"list": "route-names"}))
    model = forms.CharField(required=False, max_length=200)
    status = forms.RegexField(
        regex=r"^\s*([1-5]\d\d|[1-5]xx)\s*$",
        required=False,
        help_text=STATUS_HELP,
        error_messages={"invalid": STATUS_HELP},
    )
    min_latency = forms.FloatField(required=False, min_value=0, label="Min latency (ms)")
    min_cost = forms.DecimalField(required=False, min_value=0, decimal_places=12, label="Min cost")
    team = forms.CharField(required=False, max_length=100)
    request_id = forms.CharField(required=False, max_length=128)
    error_type = forms.CharField(required=False, max_length=50, widget=forms.TextInput(attrs={"list": "error-types"}))
    limit = forms.CharField(required=False, max_length=50, widget=forms.TextInput(attrs={"list": "limit-names"}))

    def clean(self):
        data = super().clean()
        if data.get("start") and data.get("end") and data["start"] >= data["end"]:
            raise forms.ValidationError("The start of the range must come before its end.")
        return data

    def active(self) -> dict:
        """The filters in use (name -> value as typed), for links and the export."""
        return {name: self.data[name] for name in self.fields if self.data.get(name)}


def key_ids(text: str) -> list[int]:
    """Keys whose name or owner contains `text`, or whose prefix it gives (gw_abcd1234_..., abcd1234)."""
    text = text.strip()
    prefix = text.removeprefix("gw_").split("_", 1)[0].rstrip("…")
    matched = Q(name__icontains=text) | Q(owner__icontains=text)
    if prefix:
        matched |= Q(prefix=prefix)
    return list(APIKey.objects.filter(matched).order_by("id").values_list("id", flat=True)[:MAX_KEYS_MATCHED])


def filtered(data: dict):
    """The RequestLog rows the cleaned filters select (unordered)."""
    rows = RequestLog.objects.order_by()
    if data.get("start"):
        rows = rows.filter(created__gte=data["start"])
    if data.get("end"):
        rows = rows.filter(created__lt=data["end"])
    if data.get("key"):
        rows = rows.filter(api_key_id__in=key_ids(data["key"]))
    if data.get("route"):
        route_ids = list(Route.objects.filter(name=data["route"].strip()).values_list("id", flat=True))
        rows = rows.filter(route_id__in=route_ids)
    if data.get("model"):
        rows = rows.filter(model=data["model"].strip())
    if data.get("status"):
        status = data["status"].strip()
        if status.endswith("xx"):
            low = int(status[0]) * 100
            rows = rows.filter(status__gte=low, status__lt=low + 100)
        else:
            rows = rows.filter(status=int(status))
        if int(status[0]) >= 4:
            rows = rows.filter(status__gte=400)  # log_error_status_idx's condition, word for word (below)
    if data.get("min_latency") is not None:
        rows = rows.filter(latency_ms__gte=data["min_latency"])
        if data["min_latency"] >= 1000:
            rows = rows.filter(latency_ms__gte=1000)  # log_slow_idx's condition
    if data.get("min_cost") is not None:
        rows = rows.filter(cost__gte=data["min_cost"])  # a call without a price has no cost: never selected
    if data.get("team"):
        rows = rows.filter(team_name=data["team"].strip())
    if data.get("request_id"):
        rows = rows.filter(request_id=data["request_id"].strip())
    if data.get("error_type"):
        rows = rows.filter(error_type=data["error_type"].strip()).exclude(error_type="")  # log_error_type_idx's
    if data.get("limit"):
        rows = rows.filter(limit=data["limit"].strip()).exclude(limit="")  # log_limit_idx's condition
    return rows


def encode_cursor(row) -> str:
    text = f"{row.created.isoformat()}|{row.pk}"
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, int] | None:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created, pk = text.split("|")
        return datetime.fromisoformat(created), int(pk)
    except (ValueError, UnicodeDecodeError):
        return None


def page(rows, cursor: str = "") -> tuple[list, str]:
    """Up to PAGE_SIZE rows, newest first, after the cursor; and the cursor of the next page ("" at the end)."""
    after = decode_cursor(cursor) if cursor else None
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
