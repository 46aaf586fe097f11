"""The request log's one query: a django-filter FilterSet shared by the console's explorer (and its
export) and the management API's log list, as NetBox shares one filter set between UI and API.

It sits in the data layer, beside the model and its indexes, so both back-office surfaces import it
downwards and a new filter (a column, a condition) is added once, here, for both.

Each filter is served by a named index on RequestLog (routes_admin/models.py says which query needs
which): time by log_created_idx, key by log_key_created_idx, route by log_route_created_idx, model by
log_model_created_idx, request id by log_request_id_idx, error type, limit, team and cost by their
partial indexes; status 4xx/5xx by log_error_status_idx and latency from 1 s by log_slow_idx (a 2xx
or a faster call is most rows: the newest ones are found at once by log_created_idx). Keys and
routes given by name or prefix, or by part of a route's name, are looked up first and the log
filtered by their ids. A method other than POST by log_method_idx (POSTs are most calls, found at
once by log_created_idx). Part of a model's name has no index: it is read on log_created_idx,
bounded by the time range. SQLite uses a partial
index only when the query repeats the index's condition word for word, so the filters add it.

A filter given twice, or a value that does not parse (a status of 0.5, a time that is not one), is
an error of the form: the API answers 400 and the console shows it, never a silently ignored filter.

Adding a filter: declare it below (a field name and a lookup, or a `method` when an index wants the
query shaped); the API documents it and the console offers it (console/views.py lists the fields it
shows).
"""

from datetime import UTC
from decimal import Decimal

import django_filters as filters
from django import forms
from django.db.models import Count, F, Q, Sum
from django_filters.fields import IsoDateTimeField

from .models import APIKey, Budgets, CallLimits, ErrorType, Limits, RequestLog, Route
from .pricing import PICO

MAX_KEYS_MATCHED = 500  # a key search matching more names than this keeps the first ones
# The names a refusing limit is logged under: the key's, a route's cap, its team's, and the budgets.
LIMIT_NAMES = (
    *Limits.LIMIT_FIELDS,
    *(f"route_{name}" for name in Limits.LIMIT_FIELDS),
    *(f"team_{name}" for name in CallLimits.LIMIT_FIELDS),
    *(f"{owner}{name}" for owner in ("", "team_", "route_") for name in Budgets.BUDGET_FIELDS),
)
STATUS_HELP = "200, 429 or a class: 2xx, 4xx, 5xx"
FIRST_ERROR_STATUS = 400  # log_error_status_idx's condition


class Number(filters.NumberFilter):
    """A whole number that fits the database's integers: a larger one is a 400, not an overflow (500)."""

    field_class = forms.IntegerField

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("min_value", -(2**63))
        kwargs.setdefault("max_value", 2**63 - 1)
        super().__init__(*args, **kwargs)


class UTCMomentField(IsoDateTimeField):
    def clean(self, value):
        moment = super().clean(value)
        if moment is None:
            return None
        try:
            return moment.astimezone(UTC)
        except OverflowError:  # e.g. 0001-01-01T00:00+05:00 is before year 1 in UTC
            raise forms.ValidationError("This time is out of range.") from None


class Moment(filters.IsoDateTimeFilter):
    """An ISO 8601 time, moved to UTC: PostgreSQL refuses offsets past ±15:59 that ISO 8601 allows (a 500).
    A time without an offset is in the current time zone (the console's date-time inputs send those)."""

    field_class = UTCMomentField


STATUS_PATTERN = r"^\s*([1-5]\d\d|[1-5]xx)\s*$"  # 200, 429, or a class: 2xx, 4xx, 5xx


class StatusFilter(filters.Filter):
    field_class = forms.RegexField


class StatusNumber(Number):
    """An HTTP status, 100 to 599 (the API's schema states the range)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, min_value=100, max_value=599, **kwargs)


class DecimalNumber(filters.NumberFilter):
    field_class = forms.FloatField


class OnceEachForm(forms.Form):
    """A filter form that refuses a filter given more than once (?status=200&status=500): which one
    was meant is unknown, and taking the last would silently drop the other."""

    def clean(self):
        data = super().clean()
        getlist = getattr(self.data, "getlist", None)
        for name in self.fields:
            if getlist is not None and len(getlist(name)) > 1:
                self.add_error(name, "Give this filter once.")
        return data


class RequestLogForm(OnceEachForm):
    def clean(self):
        data = super().clean()
        start, end = data.get("created_after"), data.get("created_before")
        if start and end and start >= end:
            raise forms.ValidationError("The start of the range must come before its end.")
        return data


def key_ids(text: str) -> list[int]:
    """Keys whose name or owner contains `text`, or whose prefix it gives (gw_abcd1234_..., abcd1234)."""
    text = text.strip()
    prefix = text.removeprefix("gw_").split("_", 1)[0].rstrip("…")
    matched = Q(name__icontains=text) | Q(owner__icontains=text)
    if prefix:
        matched |= Q(prefix=prefix) | Q(previous_prefix=prefix)  # the secret before a rotation names the key too
    return list(APIKey.objects.filter(matched).order_by("id").values_list("id", flat=True)[:MAX_KEYS_MATCHED])


def _datetime_input():
    return forms.DateTimeInput(attrs={"type": "datetime-local"})


class RequestLogFilterSet(filters.FilterSet):
    created_after = Moment(
        field_name="created", lookup_expr="gte", label="From", widget=_datetime_input(), help_text="ISO 8601"
    )
    created_before = Moment(
        field_name="created", lookup_expr="lt", label="Until", widget=_datetime_input(), help_text="ISO 8601"
    )
    key = filters.CharFilter(method="by_key", max_length=200, help_text="Name, owner or prefix")
    api_key = Number(help_text="The key's id: its calls whatever secret they used (rotations keep the id).")
    key_prefix = filters.CharFilter(method="by_key_prefix", max_length=8, help_text="The key's prefix.")
    route_name = filters.CharFilter(
        method="by_route_name",
        max_length=100,
        label="Route",
        widget=forms.TextInput(attrs={"list": "route-names"}),
        help_text="The route's name.",
    )
    route = Number(help_text="The route's id.")
    route_contains = filters.CharFilter(
        method="by_route_contains",
        max_length=100,
        label="Route contains",
        widget=forms.TextInput(attrs={"list": "route-names"}),
        help_text="Part of the route's name, in any case.",
    )
    model = filters.CharFilter(method="by_model", max_length=200, help_text="The model the client asked for.")
    model_contains = filters.CharFilter(
        method="by_model_contains",
        max_length=200,
        label="Model contains",
        help_text="Part of the model's name, in any case.",
    )
    status = StatusFilter(
        method="by_status",
        regex=STATUS_PATTERN,
        help_text=STATUS_HELP,
        error_messages={"invalid": STATUS_HELP},
    )
    status_min = StatusNumber(method="by_status_min", help_text="From this status.")
    status_max = StatusNumber(field_name="status", lookup_expr="lte")
    min_latency = DecimalNumber(method="by_min_latency", min_value=0, label="Min latency (ms)")
    min_cost = DecimalNumber(
        field_name="cost",  # log_cost_idx: `cost >= x` implies its condition, `cost IS NOT NULL`
        lookup_expr="gte",
        min_value=0,
        label="Min cost",
        help_text="Calls that cost at least this much (a call without a price never matches).",
    )
    team = filters.CharFilter(method="by_team", max_length=100, help_text="The key's team when it was called.")
    request_id = filters.CharFilter(method="by_request_id", max_length=128)
    error_type = filters.ChoiceFilter(method="by_error_type", choices=ErrorType.choices)
    limit = filters.CharFilter(
        method="by_limit",
        max_length=50,
        widget=forms.TextInput(attrs={"list": "limit-names"}),
        help_text="The quota limit that refused the call.",
    )
    method = filters.CharFilter(method="by_method", max_length=10, help_text="The HTTP method.")

    class Meta:
        model = RequestLog
        fields = []  # all declared above, each shaped for its index
        form = RequestLogForm

    def by_key(self, rows, name, value):
        return rows.filter(api_key_id__in=key_ids(value))

    def by_key_prefix(self, rows, name, value):
        # The key's ids, on log_key_created_idx; a prefix no key has now (a deleted key, a refused one)
        # is looked for in the logged prefixes.
        prefix = value.strip()
        ids = list(APIKey.objects.filter(Q(prefix=prefix) | Q(previous_prefix=prefix)).values_list("id", flat=True))
        return rows.filter(api_key_id__in=ids) if ids else rows.filter(key_prefix=prefix)

    def by_route_name(self, rows, name, value):
        # The same for routes: the route that has this name now, else the name as logged (a deleted
        # or renamed route).
        ids = list(Route.objects.filter(name=value.strip()).values_list("id", flat=True))
        return rows.filter(route_id__in=ids) if ids else rows.filter(route_name=value.strip())

    def by_route_contains(self, rows, name, value):
        # The routes whose name holds the text (a small table), then their calls on
        # log_route_created_idx; when no route has such a name now, the names as logged (a
        # deleted or renamed route): no index holds a part of a name, so that scan is bounded by
        # the time range (newest first on log_created_idx).
        ids = list(Route.objects.filter(name__icontains=value.strip()).values_list("id", flat=True))
        return rows.filter(route_id__in=ids) if ids else rows.filter(route_name__icontains=value.strip())

    def by_model(self, rows, name, value):
        return rows.filter(model=value.strip())

    def by_model_contains(self, rows, name, value):
        # No index holds a part of a name (models are not a table to look up first): the rows are
        # read newest first on log_created_idx, bounded by the time range; a page stops at its
        # 50 matches.
        return rows.filter(model__icontains=value.strip())

    def by_status(self, rows, name, value):
        status = value.strip()
        if status.endswith("xx"):
            low = int(status[0]) * 100
            rows = rows.filter(status__gte=low, status__lt=low + 100)
        else:
            rows = rows.filter(status=int(status))
        if int(status[0]) * 100 >= FIRST_ERROR_STATUS:
            rows = rows.filter(status__gte=FIRST_ERROR_STATUS)  # log_error_status_idx's condition, word for word
        return rows

    def by_status_min(self, rows, name, value):
        rows = rows.filter(status__gte=value)
        if value >= FIRST_ERROR_STATUS:
            rows = rows.filter(status__gte=FIRST_ERROR_STATUS)
        return rows

    def by_min_latency(self, rows, name, value):
        rows = rows.filter(latency_ms__gte=value)
        if value >= 1000:
            rows = rows.filter(latency_ms__gte=1000)  # log_slow_idx's condition
        return rows

    def by_request_id(self, rows, name, value):
        return rows.filter(request_id=value.strip())

    def by_error_type(self, rows, name, value):
        return rows.filter(error_type=value).exclude(error_type="")  # log_error_type_idx's condition

    def by_limit(self, rows, name, value):
        return rows.filter(limit=value.strip()).exclude(limit="")  # log_limit_idx's condition

    def by_method(self, rows, name, value):
        rows = rows.filter(method=value)
        return rows if value == "POST" else rows.exclude(method="POST")  # log_method_idx's condition

    def by_team(self, rows, name, value):
        return rows.filter(team_name=value).exclude(team_name="")  # log_team_idx's condition


# --- Grouping: the filtered calls summed per team, key, route or model -----------------------------

# group name -> the log column its groups are told apart by
GROUPS = {"team": "team_name", "key": "api_key_id", "route": "route_name", "model": "model"}
MAX_GROUPS = 1000


def summarize(rows, by: str) -> list[dict]:
    """The filtered rows summed per group, biggest spend first: value, calls, errors, tokens, cost
    (None when no call of the group had a price) and unpriced (calls of a model without a price).
    The explorer, its export and the API's /api/logs/summary/ all sum through here."""
    column = GROUPS[by]
    summed = (
        rows.order_by()
        .values(column)
        .annotate(
            calls=Count("id"),
            errors=Count("id", filter=~Q(error_type="")),
            prompt_tokens=Sum("prompt_tokens"),
            completion_tokens=Sum("completion_tokens"),
            total_tokens=Sum("total_tokens"),
            spent=Sum("cost"),  # not named "cost": an annotation must not shadow the column it sums
            unpriced=Count("id", filter=Q(cost__isnull=True) & ~Q(model="")),
        )
        .order_by(F("spent").desc(nulls_last=True), "-calls", column)[:MAX_GROUPS]
    )
    found = []
    for item in summed:
        value = item.pop(column)
        spent = item.pop("spent")
        # Quantized to the column's places: SQLite sums decimals as floats (PostgreSQL exactly).
        item["cost"] = None if spent is None else Decimal(spent).quantize(PICO)
        for name in ("prompt_tokens", "completion_tokens", "total_tokens"):
            item[name] = item[name] or 0
        found.append({"value": "" if value is None else value, **item})
    if by == "key":
        names = dict(APIKey.objects.filter(id__in=[g["value"] for g in found if g["value"]]).values_list("id", "name"))
        for group in found:
            group["name"] = names.get(group["value"], f"deleted key #{group['value']}") if group["value"] else ""
    return found
