"""The admin console: routes and targets, keys, quota plans, and the read-only request log."""

import secrets
from datetime import timedelta

from django.contrib import admin, messages
from django.contrib.admin.widgets import AdminBigIntegerFieldWidget
from django.core.exceptions import PermissionDenied
from django.db import models
from django.db.models import Count, Q, Sum
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from proxy.state import quota_state, reset_quotas

from . import keys
from .admin_history import HistoryLinkMixin
from .forms import APIKeyForm, UpstreamTargetForm
from .models import APIKey, KeyUsage, QuotaPlan, RequestLog, Route, UpstreamTarget

admin.site.site_header = "AI gateway"
admin.site.site_title = "AI gateway"
admin.site.index_title = "Configuration and audit"
admin.site.site_url = "/admin/first-steps/"  # "View site": how to call the gateway (the proxy has no home page)

# Limits and byte counts run to millions: Django's 5em integer input hides their digits.
WIDE_NUMBERS = {models.PositiveIntegerField: {"widget": AdminBigIntegerFieldWidget}}


class UpstreamTargetInline(admin.StackedInline):
    model = UpstreamTarget
    form = UpstreamTargetForm
    extra = 0
    readonly_fields = ["stored_credential"]
    fields = [
        ("name", "url"),
        ("weight", "position", "enabled"),
        ("credential_header", "credential_value"),
        ("stored_credential", "clear_credential"),
        "model_aliases",
    ]

    @admin.display(description="Stored credential")
    def stored_credential(self, obj):
        return obj.masked_credential or "—"


@admin.register(Route)
class RouteAdmin(HistoryLinkMixin, admin.ModelAdmin):
    list_display = ["name", "path_prefix", "methods", "model_names", "priority", "strategy", "target_count", "enabled"]
    list_filter = ["enabled", "strategy"]
    search_fields = ["name", "path_prefix", "model_names", "targets__url"]
    list_select_related = ["quota_plan", "fallback"]
    inlines = [UpstreamTargetInline]
    formfield_overrides = WIDE_NUMBERS
    fieldsets = [
        (None, {"fields": ["name", "enabled", "path_prefix", "methods", "model_names", "priority"]}),
        ("Content conditions", {"fields": ["match_headers", "match_body"], "classes": ["collapse"]}),
        (
            "Upstream behaviour",
            {
                "fields": [
                    "strategy",
                    ("connect_timeout", "read_timeout"),
                    "max_body_bytes",
                    ("max_attempts", "retry_statuses", "retry_non_idempotent"),
                    "fallback",
                ]
            },
        ),
        ("Quota", {"fields": ["quota_plan"]}),
        ("Spend", {"fields": ["budget_per_day", "budget_per_month", "default_max_tokens"]}),
        ("Jobs (asynchronous calls)", {"fields": ["processing_mode", "max_concurrent_jobs"]}),
    ]

    def get_queryset(self, request):
        from django.db.models import Count

        return super().get_queryset(request).annotate(_targets=Count("targets"))

    @admin.display(description="Targets", ordering="_targets")
    def target_count(self, obj):
        return obj._targets


def against(used: int | None, limit: int | None) -> str:
    """'1,234 of 50,000 (2%)', or '1,234 (no limit)'."""
    used = used or 0
    if limit is None:
        return f"{used:,} (no limit)"
    percent = 100 * used / limit if limit else 100
    return f"{used:,} of {limit:,} ({percent:.0f}%)"


def live_line(quota) -> str:
    used = quota.limit - max(0, quota.remaining)  # refused calls count in the window, but nothing is over-used
    line = against(used, quota.limit)
    return f"{line}, resets in {quota.reset} s" if quota.window else line


def usage_periods():
    """Today and the first day of this month, in the server's time zone (as the quotas count)."""
    today = timezone.localdate()
    return today, today.replace(day=1)


@admin.register(QuotaPlan)
class QuotaPlanAdmin(HistoryLinkMixin, admin.ModelAdmin):
    list_display = ["name", *QuotaPlan.LIMIT_FIELDS, "key_count", "route_count"]
    search_fields = ["name"]
    formfield_overrides = WIDE_NUMBERS
    fieldsets = [
        (None, {"fields": ["name"], "description": "Every limit is optional: leave it empty for no limit."}),
        ("Requests", {"fields": ["requests_per_minute", "requests_per_hour", "requests_per_day"]}),
        (
            "Tokens",
            {
                "fields": ["tokens_per_day", "tokens_per_month"],
                "description": "Counted from the usage the upstream reports, per calendar day and month.",
            },
        ),
        ("Concurrency", {"fields": ["max_concurrent"]}),
    ]

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .annotate(_keys=Count("api_keys", distinct=True), _routes=Count("routes", distinct=True))
        )

    @admin.display(description="Keys", ordering="_keys")
    def key_count(self, obj):
        return obj._keys

    @admin.display(description="Routes capped", ordering="_routes")
    def route_count(self, obj):
        return obj._routes


ISSUED_KEYS = "issued_keys"  # session key: one-time token -> the key id and its secret, until shown


@admin.register(APIKey)
class APIKeyAdmin(HistoryLinkMixin, admin.ModelAdmin):
    form = APIKeyForm
    formfield_overrides = WIDE_NUMBERS
    list_display = [
        "name",
        "display_prefix",
        "owner",
        "quota_plan",
        "requests_today",
        "tokens_today",
        "tokens_this_month",
        "created",
        "expires",
        "revoked",
        "enabled",
        "all_routes",
    ]
    list_filter = ["enabled", "all_routes", ("revoked", admin.EmptyFieldListFilter), "quota_plan", "created"]
    search_fields = ["name", "owner", "prefix"]
    list_select_related = ["quota_plan", "user"]
    raw_id_fields = ["user"]
    filter_horizontal = ["routes"]
    readonly_fields = ["display_prefix", "secret_rotation", "created", "revoked", "usage_against_limits"]
    actions = ["revoke", "reset_quota_counters"]
    fieldsets = [
        (
            None,
            {
                "fields": [
                    "name",
                    "owner",
                    "user",
                    "display_prefix",
                    "secret_rotation",
                    "created",
                    "expires",
                    "revoked",
                    "enabled",
                ]
            },
        ),
        ("Reach", {"fields": ["all_routes", "routes"]}),
        (
            "Quota",
            {
                "fields": ["quota_plan", *APIKey.LIMIT_FIELDS, "usage_against_limits"],
                "description": "Limits set here override the plan's; empty means the plan's value.",
            },
        ),
        ("Spend", {"fields": ["team", "budget_per_day", "budget_per_month"]}),
    ]

    def get_queryset(self, request):
        # Today's and this month's use in the same query as the list (KeyUsage, one row per key and day).
        today, first = usage_periods()
        return (
            super()
            .get_queryset(request)
            .annotate(
                _requests_today=Sum("usage__requests", filter=Q(usage__day=today)),
                _tokens_today=Sum("usage__total_tokens", filter=Q(usage__day=today)),
                _tokens_month=Sum("usage__total_tokens", filter=Q(usage__day__gte=first)),
            )
        )

    @admin.display(description="Requests today", ordering="_requests_today")
    def requests_today(self, obj):
        return against(getattr(obj, "_requests_today", 0), obj.effective_limits()["requests_per_day"])

    @admin.display(description="Tokens today", ordering="_tokens_today")
    def tokens_today(self, obj):
        return against(getattr(obj, "_tokens_today", 0), obj.effective_limits()["tokens_per_day"])

    @admin.display(description="Tokens this month", ordering="_tokens_month")
    def tokens_this_month(self, obj):
        return against(getattr(obj, "_tokens_month", 0), obj.effective_limits()["tokens_per_month"])

    @admin.display(description="Use against the limits")
    def usage_against_limits(self, obj):
        if obj is None or obj.pk is None:
            return "—"
        today, first = usage_periods()
        totals = obj.usage.aggregate(
            requests_today=Sum("requests", filter=Q(day=today)),
            tokens_today=Sum("total_tokens", filter=Q(day=today)),
            tokens_month=Sum("total_tokens", filter=Q(day__gte=first)),
        )
        limits = obj.effective_limits()
        rows = [
            ("Calls today (refused ones included)", against(totals["requests_today"], None)),
            ("Tokens today", against(totals["tokens_today"], limits["tokens_per_day"])),
            ("Tokens this month", against(totals["tokens_month"], limits["tokens_per_month"])),
        ]
        try:
            live = [(f"Now: {q.name.replace('_', ' ')}", live_line(q)) for q in quota_state(obj)]
        except Exception:  # the admin page must not fail with the cache
            live = [("Now", "unknown: the cache is unreachable")]
        body = format_html_join("", "<tr><th>{}</th><td>{}</td></tr>", rows + live)
        return format_html(
            '<table>{}</table><p class="help">Totals are recorded per day, a few seconds behind the calls. '
            "The “Now” lines are the live counters that admit or refuse calls; request windows are fixed "
            "periods with their own reset time.</p>",
            body,
        )

    def save_model(self, request, obj, form, change):
        if not change:
            # The full key exists only in this request: stored as a hash, shown once by response_add.
            request._issued_key, obj.prefix, obj.hashed_secret = keys.generate()
        super().save_model(request, obj, form, change)

    def response_add(self, request, obj, post_url_continue=None):
        return self.show_once(request, obj, request._issued_key)

    @staticmethod
    def show_once(request, key, secret: str):
        """Redirect after the POST, so that reloading the next page cannot issue a second secret.
        The secret waits in the session under a one-time token and is removed when first shown."""
        token = secrets.token_urlsafe(16)
        request.session.setdefault(ISSUED_KEYS, {})[token] = {"key": key.pk, "secret": secret}
        request.session.modified = True
        return redirect("admin:routes_admin_apikey_issued", key.pk, token)

    def get_urls(self):
        issued = path(
            "<int:key_id>/issued/<str:token>/",
            self.admin_site.admin_view(self.issued_view),
            name="routes_admin_apikey_issued",
        )
        rotate = path(
            "<int:key_id>/rotate/", self.admin_site.admin_view(self.rotate_view), name="routes_admin_apikey_rotate"
        )
        return [issued, rotate, *super().get_urls()]

    @admin.display(description="Secret")
    def secret_rotation(self, obj):
        if obj is None or obj.pk is None:
            return "Shown once, when the key is saved."
        since = f"Last rotated {obj.rotated:%Y-%m-%d %H:%M %Z}. " if obj.rotated else ""
        return format_html(
            '{}<a class="button" href="{}">Rotate the secret…</a>',
            since,
            reverse("admin:routes_admin_apikey_rotate", args=[obj.pk]),
        )

    def rotate_view(self, request, key_id):
        """A new secret for the same key (its limits, routes and usage stay), shown once; the old
        secret works for the grace period given, then is refused everywhere."""
        key = get_object_or_404(APIKey, pk=key_id)
        if not self.has_change_permission(request, key):
            raise PermissionDenied
        error = ""
        if request.method == "POST":
            minutes = request.POST.get("grace_minutes", "0").strip() or "0"
            if minutes.isdigit() and int(minutes) <= 7 * 24 * 60:
                secret = key.rotate(timedelta(minutes=int(minutes)))
                return self.show_once(request, key, secret)
            error = "Give the grace period in whole minutes, from 0 to 10080 (a week)."
        context = {
            **self.admin_site.each_context(request),
            "key": key,
            "error": error,
            "opts": self.model._meta,
            "title": f"Rotate the secret of {key}",
        }
        return TemplateResponse(request, "admin/routes_admin/apikey/rotate.html", context)

    def issued_view(self, request, key_id, token):
        """The new key's secret, once: a reload finds the token spent and shows no secret."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        key = get_object_or_404(APIKey, pk=key_id)
        pending = request.session.get(ISSUED_KEYS, {})
        issued = pending.pop(token, None)
        request.session.modified = True
        context = {
            **self.admin_site.each_context(request),
            "key": key,
            "secret": issued["secret"] if issued and issued["key"] == key.pk else None,
            "opts": self.model._meta,
            "title": "API key issued",
        }
        response = TemplateResponse(request, "admin/routes_admin/apikey/issued.html", context)
        response["Cache-Control"] = "no-store"  # the secret must not stay in any cache
        return response

    @admin.action(description="Revoke the selected keys", permissions=["change"])
    def revoke(self, request, queryset):
        count = 0
        for key in queryset.filter(revoked__isnull=True):
            key.revoked = timezone.now()
            key.save(update_fields=["revoked"])  # one save per key so every process hears of it
            count += 1
        self.message_user(request, f"Revoked {count} key(s).", messages.SUCCESS)

    @admin.action(description="Reset the quota counters of the selected keys", permissions=["change"])
    def reset_quota_counters(self, request, queryset):
        capped = list(Route.objects.filter(quota_plan__isnull=False).select_related("quota_plan"))
        count = 0
        for key in queryset.select_related("quota_plan"):
            reset_quotas(key, capped)
            count += 1
        self.message_user(
            request,
            f"Reset the counters of {count} key(s): request windows, token counters and this month's usage totals "
            "start again from zero (the request log keeps the history).",
            messages.SUCCESS,
        )


class ReadOnlyAdmin(admin.ModelAdmin):
    """Auditors' view: nobody adds, changes or deletes rows here."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


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
    list_filter = ["status", "method", "route_name", "error_type", "streamed", "usage_estimated", "created"]
    search_fields = ["request_id", "path", "key_prefix", "route_name", "target", "client_ip"]
    date_hierarchy = "created"
    show_full_result_count = False  # counting millions of rows on every page is slow


@admin.register(KeyUsage)
class KeyUsageAdmin(ReadOnlyAdmin):
    list_display = ["day", "api_key", "requests", "prompt_tokens", "completion_tokens", "total_tokens", "daily_limit"]
    list_filter = ["day"]
    search_fields = ["api_key__name", "api_key__prefix"]
    list_select_related = ["api_key", "api_key__quota_plan"]
    date_hierarchy = "day"

    @admin.display(description="Tokens against the daily limit")
    def daily_limit(self, obj):
        return against(obj.total_tokens, obj.api_key.effective_limits()["tokens_per_day"])


# The admin's other pages: target health (circuit breaker states and reset), the price list and teams.
from . import admin_breakers, admin_spend  # noqa: E402,F401
