"""Query filters of the list endpoints (django-filter): ?name=..., ?created_after=..., ..."""

import django_filters as filters

from routes_admin.models import APIKey, KeyUsage, QuotaPlan, RequestLog, Route


class RouteFilter(filters.FilterSet):
    name = filters.CharFilter(lookup_expr="icontains")
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

    class Meta:
        model = APIKey
        fields = ["name", "owner", "enabled", "all_routes", "quota_plan", "routes", "revoked"]


class RequestLogFilter(filters.FilterSet):
    created_after = filters.IsoDateTimeFilter(field_name="created", lookup_expr="gte")
    created_before = filters.IsoDateTimeFilter(field_name="created", lookup_expr="lt")
    status_min = filters.NumberFilter(field_name="status", lookup_expr="gte")
    status_max = filters.NumberFilter(field_name="status", lookup_expr="lte")

    class Meta:
        model = RequestLog
        fields = ["request_id", "api_key", "key_prefix", "route", "route_name", "method", "status", "error_type"]


class UsageFilter(filters.FilterSet):
    day_from = filters.DateFilter(field_name="day", lookup_expr="gte")
    day_to = filters.DateFilter(field_name="day", lookup_expr="lte")

    class Meta:
        model = KeyUsage
        fields = ["api_key", "day"]
