"""Query filters of the list endpoints (django-filter): ?name=..., ?day_from=..., ...

The request log's filters are the one FilterSet the console shares (routes_admin/filtersets.py).
"""

import django_filters as filters
from auditlog.models import LogEntry
from django import forms
from drf_spectacular.utils import extend_schema_field

from routes_admin.filtersets import STATUS_PATTERN, DecimalNumber, Moment, Number, StatusFilter, StatusNumber
from routes_admin.models import APIKey, BudgetAlert, KeyUsage, ModelPrice, QuotaPlan, Route, Team

from .fields import NO_NUL

# The schema states the bounds that Number enforces (an id past them is a 400, not an overflow).
extend_schema_field({"type": "integer", "minimum": -(2**63), "maximum": 2**63 - 1})(Number)
extend_schema_field({"type": "string", "pattern": STATUS_PATTERN})(StatusFilter)
extend_schema_field({"type": "integer", "minimum": 100, "maximum": 599})(StatusNumber)
extend_schema_field({"type": "number", "minimum": 0, "maximum": 1e50})(DecimalNumber)  # latency and cost bounds


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


class PriceFilter(StrictFilterSet):
    model = Text()
    target = Number()

    class Meta:
        model = ModelPrice
        fields = ["model", "target"]


class TeamFilter(StrictFilterSet):
    name = Text(lookup_expr="icontains")

    class Meta:
        model = Team
        fields = ["name"]


class KeyFilter(StrictFilterSet):
    name = Text(lookup_expr="icontains")
    owner = Text(lookup_expr="icontains")
    enabled = Boolean()
    all_routes = Boolean()
    revoked = Boolean(field_name="revoked", lookup_expr="isnull", exclude=True)
    quota_plan = Number()
    routes = Number()
    team = Number()

    class Meta:
        model = APIKey
        fields = ["name", "owner", "enabled", "all_routes", "quota_plan", "routes", "team", "revoked"]


class BudgetAlertFilter(StrictFilterSet):
    scope = filters.ChoiceFilter(choices=BudgetAlert.Scope.choices)
    owner_id = Number(help_text="The key's, team's or route's id (with scope).")
    state = filters.ChoiceFilter(choices=BudgetAlert.State.choices)
    after = Moment(field_name="created", lookup_expr="gte")
    before = Moment(field_name="created", lookup_expr="lt")

    class Meta:
        model = BudgetAlert
        fields = ["scope", "owner_id", "state"]


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
