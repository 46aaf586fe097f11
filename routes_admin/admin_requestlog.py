"""Admin page "Request logs": the read-only log, as fast on millions of rows as the console's explorer.

Its filters go through the log's one FilterSet (filtersets.py), so each is served by its index.
Nothing here asks the database for the values a column holds: Django's date_hierarchy and its
field list filters run SELECT DISTINCT over the whole log on every page (1.74 s of a 2.45 s page at
200,000 rows). The choices come from the ErrorType list, the routes table and fixed status classes;
the search is by request id (its index). Nor does it count the whole log for its page links (a
COUNT(*) of a million rows took about a second): it counts the matching calls up to PAGED_CALLS,
and its pages reach that many, newest first. The console's explorer, linked from this page, pages
through all of them by cursor and has the other filters.
"""

from datetime import timedelta

from django.contrib import admin
from django.contrib.admin.options import IncorrectLookupParameters
from django.core.paginator import Paginator
from django.utils import timezone
from django.utils.functional import cached_property

from .admin_parts import ReadOnlyAdmin
from .filtersets import RequestLogFilterSet
from .models import ErrorType, RequestLog, Route

PAGED_CALLS = 5_000


class CappedPaginator(Paginator):
    """Counts at most PAGED_CALLS rows: SELECT COUNT(*) over a LIMIT, an index range, not the log."""

    @cached_property
    def count(self) -> int:
        return self.object_list.order_by()[:PAGED_CALLS].count()


class LogFilter(admin.SimpleListFilter):
    """A list filter that hands its value to the FilterSet's filter of the same name."""

    def queryset(self, request, queryset):
        if self.value() is None:
            return queryset
        found = RequestLogFilterSet({self.parameter_name: self.value()}, queryset=queryset)
        if not found.is_valid():
            raise IncorrectLookupParameters(found.errors)
        return found.qs


class StatusFilter(LogFilter):
    title = "status"
    parameter_name = "status"

    def lookups(self, request, model_admin):
        return [("2xx", "2xx answered"), ("4xx", "4xx refused"), ("5xx", "5xx failed"), ("429", "429 over a limit")]


class ErrorTypeFilter(LogFilter):
    title = "error type"
    parameter_name = "error_type"

    def lookups(self, request, model_admin):
        return ErrorType.choices


class RouteFilter(LogFilter):
    """By route: the routes table (a few rows), not the distinct names of the log."""

    title = "route"
    parameter_name = "route_name"

    def lookups(self, request, model_admin):
        return [(name, name) for name in Route.objects.order_by("name").values_list("name", flat=True)]


class TimeFilter(admin.SimpleListFilter):
    title = "time"
    parameter_name = "within"
    SPANS = {"1h": timedelta(hours=1), "24h": timedelta(days=1), "7d": timedelta(days=7), "30d": timedelta(days=30)}

    def lookups(self, request, model_admin):
        return [("1h", "Last hour"), ("24h", "Last 24 hours"), ("7d", "Last 7 days"), ("30d", "Last 30 days")]

    def queryset(self, request, queryset):
        if self.value() is None:
            return queryset
        if self.value() not in self.SPANS:
            raise IncorrectLookupParameters(f"unknown time span {self.value()!r}")
        return queryset.filter(created__gte=timezone.now() - self.SPANS[self.value()])


@admin.register(RequestLog)
class RequestLogAdmin(ReadOnlyAdmin):
    list_display = [
        # What an auditor scans first comes first; the long request id last (it is searchable).
        "created",
        "status",
        "method",
        "path",
        "route_name",
        "key_prefix",
        "latency_ms",
        "total_tokens",
        "error_type",
        "target",
        "attempts",
        "client_ip",
        "request_id",
    ]
    list_filter = [TimeFilter, StatusFilter, ErrorTypeFilter, RouteFilter]
    search_fields = ["request_id"]  # exactly, on its index (get_search_results)
    search_help_text = "A request id, exactly. The console's explorer finds calls by key, model, latency and more."
    show_full_result_count = False  # counting millions of rows on every page is slow
    paginator = CappedPaginator
    list_per_page = 50
    ordering = ["-created", "-id"]

    def changelist_view(self, request, extra_context=None):
        return super().changelist_view(request, {"paged_calls": f"{PAGED_CALLS:,}", **(extra_context or {})})

    def get_search_results(self, request, queryset, search_term):
        if not search_term.strip():
            return queryset, False
        return RequestLogFilterSet({"request_id": search_term}, queryset=queryset).qs, False
