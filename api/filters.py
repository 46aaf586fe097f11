"""Query filters of the list endpoints (django-filter): ?name=..., ?created_after=..., ..."""

from datetime import UTC

import django_filters as filters
from auditlog.models import LogEntry
from django import forms
from django_filters.fields import IsoDateTimeField
from drf_spectacular.utils import extend_schema_field

from routes_admin.models import APIKey, KeyUsage, QuotaPlan, RequestLog, Route

from .schema import NO_NUL


@extend_schema_field({"type": "integer", "minimum": -(2**63), "maximum": 2**63 - 1})
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


class StrictBooleanField(forms.Field):
    """ "true" or "false", as the schema says: django-filter's own reads any other word as no filter."""

    def to_python(self, value):
        if value in (None, ""):
            return None
        if value not in ("true", "false"):
            raise forms.ValidationError('Use "true" or "false".')
        return value == "true"


class Boolean(filters.BooleanFilter):
    field_class = StrictBooleanField

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("widget", forms.TextInput)  # the raw word reaches the field, not a guess
        super().__init__(*args, **kwargs)


class StrictFilterSet(filters.FilterSet):
    """A filter given twice is a 400: otherwise the last one would count and the first be ignored."""

    def is_valid(self) -> bool:
        self.form.errors  # noqa: B018  (cleans the form, so errors can be added)
        if hasattr(self.data, "getlist"):
            for name in self.filters:
                if len(self.data.getlist(name)) > 1:
                    self.form.add_error(name, "Give this parameter once.")
        return self.form.is_valid()


@extend_schema_field({"type": "string", "pattern": NO_NUL})
class Text(filters.CharFilter):
    """Text to look for; a NUL character is a 400 (Django's forms refuse it), as the schema says."""


# Related objects are filtered by id as plain numbers: an id that matches nothing gives an empty
# list, not a 400 (django-filter's default choice fields reject unknown ids).


class RouteFilter(StrictFilterSet):
    name = Text(lookup_expr="icontains")
    enabled = Boolean()
    strategy = filters.ChoiceFilter(choices=Route.Strategy.choices)
    quota_plan = Number()
    path_prefix = Text(lookup_expr="startswith")

    class Meta:
        model = Route
        fields = ["name", "path_prefix", "enabled", "strategy", "quota_plan"]


class PlanFilter(StrictFilterSet):
    name = Text(lookup_expr="icontains")

    class Meta:
        model = QuotaPlan
        fields = ["name"]


class KeyFilter(StrictFilterSet):
    name = Text(lookup_expr="icontains")
    owner = Text(lookup_expr="icontains")
    enabled = Boolean()
    all_routes = Boolean()
    revoked = Boolean(field_name="revoked", lookup_expr="isnull", exclude=True)
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


class UsageFilter(StrictFilterSet):
    day_from = filters.DateFilter(field_name="day", lookup_expr="gte")
    day_to = filters.DateFilter(field_name="day", lookup_expr="lte")
    api_key = Number()

    class Meta:
        model = KeyUsage
        fields = ["api_key", "day"]


class HistoryFilter(StrictFilterSet):
    model = Text(method="by_model", help_text='"app_label.model", e.g. "routes_admin.route".')
    object_pk = Text()
    actor = Number(help_text="The user's id.")
    after = Moment(field_name="timestamp", lookup_expr="gte")
    before = Moment(field_name="timestamp", lookup_expr="lt")

    class Meta:
        model = LogEntry
        fields = ["model", "object_pk", "actor"]

    def by_model(self, queryset, name, value):
        app_label, _, model = value.partition(".")
        return queryset.filter(content_type__app_label=app_label, content_type__model=model)
