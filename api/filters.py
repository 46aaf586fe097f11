"""Query filters of the list endpoints (django-filter): ?name=..., ?day_from=..., ...

The request log's filters are the one FilterSet the console shares (routes_admin/filtersets.py).
"""

import django_filters as filters
from auditlog.models import LogEntry

from routes_admin.filtersets import Moment, Number
from routes_admin.models import APIKey, KeyUsage, QuotaPlan, Route

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
