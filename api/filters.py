"""Query filters of the list endpoints (django-filter): ?name=..., ?created_after=..., ..."""

from datetime import UTC

import django_filters as filters
from auditlog.models import LogEntry
from django import forms
from django_filters.fields import IsoDateTimeField

from routes_admin.models import APIKey, KeyUsage, QuotaPlan, RequestLog, Route


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
    """An ISO 8601 time, moved to UTC: PostgreSQL refuses offsets past ±15:59 that ISO 8601 allows (a 500)."""

    field_class = UTCMomentField


# Related objects are filtered by id as plain numbers: an id that matches nothing gives an empty
# list, not a 400 (django-filter's default choice fields reject unknown ids).


class RouteFilter(filters.FilterSet):
    name = filters.CharFilter(lookup_expr="icontains")
    quota_plan = Number()
    path_prefix = filters.CharFilter(lookup_expr="startswith")

    class Meta:
        model = Route
        fields = ["name", "path_prefix", "enabled", "strategy", "quota_plan"]


class PlanFilter(filters.FilterSet):
    name = filters.CharFilter(lookup_expr="icontains")

    class Meta:
        model = QuotaPlan
        fields = ["name"]


class KeyFilter(filters.FilterSet):
    name = filters.CharFilter(lookup_expr="icontains")
    owner = filters.CharFilter(lookup_expr="icontains")
    revoked = filters.BooleanFilter(field_name="revoked", lookup_expr="isnull", exclude=True)
    quota_plan = Number()
    routes = Number()

    class Meta:
        model = APIKey
        fields = ["name", "owner", "enabled", "all_routes", "quota_plan", "routes", "revoked"]


class RequestLogFilter(filters.FilterSet):
    created_after = Moment(field_name="created", lookup_expr="gte")
    created_before = Moment(field_name="created", lookup_expr="lt")
    status_min = Number(field_name="status", lookup_expr="gte")
    status_max = Number(field_name="status", lookup_expr="lte")
    api_key = Number()
    route = Number()

    class Meta:
        model = RequestLog
        fields = ["request_id", "api_key", "key_prefix", "route", "route_name", "method", "status", "error_type"]


class UsageFilter(filters.FilterSet):
    day_from = filters.DateFilter(field_name="day", lookup_expr="gte")
    day_to = filters.DateFilter(field_name="day", lookup_expr="lte")
    api_key = Number()

    class Meta:
        model = KeyUsage
        fields = ["api_key", "day"]


class HistoryFilter(filters.FilterSet):
    model = filters.CharFilter(method="by_model", help_text='"app_label.model", e.g. "routes_admin.route".')
    object_pk = filters.CharFilter()
    actor = Number(help_text="The user's id.")
    after = Moment(field_name="timestamp", lookup_expr="gte")
    before = Moment(field_name="timestamp", lookup_expr="lt")

    class Meta:
        model = LogEntry
        fields = ["model", "object_pk", "actor"]

    def by_model(self, queryset, name, value):
        app_label, _, model = value.partition(".")
        return queryset.filter(content_type__app_label=app_label, content_type__model=model)
