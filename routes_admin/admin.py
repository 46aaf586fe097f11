"""The admin console: routes and targets, keys, quota plans, and the read-only request log."""

from datetime import timedelta

from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.contrib.admin.widgets import AdminBigIntegerFieldWidget
from django.core.exceptions import PermissionDenied
from django.db import models, transaction
from django.db.models import Count, Q, Sum
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from proxy.state import budget_state, quota_state, reset_quotas

from . import durations, history, shown_once, spending
from .admin_history import HistoryLinkMixin
from .admin_parts import ReadOnlyAdmin, RevokedFilter
from .forms import APIKeyForm, TargetFormSet, UpstreamTargetForm
from .models import APIKey, BudgetAlert, Budgets, KeyUsage, QuotaPlan, Route, UpstreamTarget
from .pricing import plain
from .services import ServiceError, plans
from .services import keys as key_service
from .services import routes as route_service

admin.site.site_header = "AI gateway"
admin.site.site_title = "AI gateway"
admin.site.index_title = "Configuration and audit"
admin.site.site_url = "/admin/first-steps/"  # "View site": how to call the gateway (the proxy has no home page)

# Limits and byte counts run to millions: Django's 5em integer input hides their digits.
WIDE_NUMBERS = {models.PositiveIntegerField: {"widget": AdminBigIntegerFieldWidget}}


class UpstreamTargetInline(admin.StackedInline):
    model = UpstreamTarget
    form = UpstreamTargetForm
    formset = TargetFormSet
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
        ("Spend", {"fields": ["budget_per_day", "budget_per_month", *Budgets.ALERT_FIELDS, "default_max_tokens"]}),
        ("Jobs (asynchronous calls)", {"fields": ["processing_mode", "max_concurrent_jobs"]}),
    ]

    def get_queryset(self, request):
        from django.db.models import Count

        return super().get_queryset(request).annotate(_targets=Count("targets"))

    @admin.display(description="Targets", ordering="_targets")
    def target_count(self, obj):
        return obj._targets

    # Writes go through the service layer: the route and its targets as one change.
    def save_model(self, request, obj, form, change):
        pass  # saved with its targets by save_related

    def save_related(self, request, form, formsets, change):
        targets = next((f for f in formsets if isinstance(f, TargetFormSet)), None)
        fields = {name: value for name, value in form.cleaned_data.items() if name in route_service.ROUTE_FIELDS}
        saved = route_service.save_route(form.instance, fields, targets.given() if targets else None)
        if targets:
            targets.record(saved)
        for warning in route_service.route_warnings(saved.route):
            messages.warning(request, warning)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        # The route's warnings whenever its page is opened, but once: after "Save and continue"
        # the save's own warnings are already waiting to be shown.
        route = self.get_object(request, unquote(object_id)) if request.method == "GET" else None
        warnings = route_service.route_warnings(route) if route is not None else []
        if warnings:
            waiting = {str(message) for message in messages.get_messages(request)}
            for warning in warnings:
                if warning not in waiting:
                    messages.warning(request, warning)
        return super().change_view(request, object_id, form_url, extra_context)

    def delete_model(self, request, obj):
        route_service.delete_route(obj)

    def delete_queryset(self, request, queryset):
        for route in queryset:
            route_service.delete_route(route)


def against(used: int | None, limit: int | None) -> str:
    """'1,234 of 50,000 (2%)', or '1,234 (no limit)'."""
    used = used or 0
    if limit is None:
        return f"{used:,} (no limit)"
    percent = 100 * used / limit if limit else 100
    return f"{used:,} of {limit:,} ({percent:.0f}%)"


def money(amount) -> str:
    return f"{plain(amount)} {settings.GATEWAY_CURRENCY}"


def live_line(quota) -> str:
    used = quota.limit - max(0, quota.remaining)  # refused calls count in the window, but nothing is over-used
    line = against(used, quota.limit)
    return f"{line}, resets in {durations.in_words(quota.reset)}" if quota.window else line


def old_secret_line(key) -> str:
    """When the secret replaced by the key's last rotation stops (or stopped) working."""
    if not key.previous_expires:
        return ""
    end = timezone.localtime(key.previous_expires)
    old = f"The old secret (gw_{key.previous_prefix}_…)" if key.previous_prefix else "The old secret"
    if end > timezone.now():
        return f"{old} keeps working until {end:%Y-%m-%d %H:%M %Z}."
    return f"{old} stopped working at {end:%Y-%m-%d %H:%M %Z}."


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
        ("Concurrency", {"fields": ["max_concurrent", "max_queued_jobs"]}),
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

    def save_model(self, request, obj, form, change):
        plans.save_plan(obj, form.cleaned_data)

    def delete_model(self, request, obj):
        plans.delete_plan(obj)

    def delete_queryset(self, request, queryset):
        for plan in queryset:
            plans.delete_plan(plan)


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
    list_filter = ["enabled", "all_routes", RevokedFilter, "quota_plan", "created"]
    search_fields = ["name", "owner", "prefix"]
    list_select_related = ["quota_plan", "user"]
    raw_id_fields = ["user"]
    filter_horizontal = ["routes"]
    readonly_fields = [
        "display_prefix",
        "secret_rotation",
        "created",
        "revoked",
        "usage_against_limits",
        "spend_against_budgets",
        "budget_alerts",
    ]
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
        (
            "Spend",
            {
                "fields": [
                    "team",
                    "budget_per_day",
                    "budget_per_month",
                    "alert_thresholds",
                    "alert_webhook",
                    "alert_emails",
                    "spend_against_budgets",
                    "budget_alerts",
                ]
            },
        ),
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

    @admin.display(description="Spend against the budgets")
    def spend_against_budgets(self, obj):
        if obj is None or obj.pk is None:
            return "—"
        spend = spending.owner_spend("key", obj)
        rows = [
            ("Spent today", money(spend["today"].spent)),
            ("Spent this month", money(spend["month"].spent)),
        ]
        for line in spending.against_budgets(obj, spend):
            what = "Daily budget" if line["period"] == "today" else "Monthly budget"
            rows.append((what, f"{money(line['spent'])} of {money(line['budget'])} ({line['percent']:.0f}%)"))
        try:
            for line in budget_state("key", obj):
                period = "today" if line["name"] == "budget_per_day" else "this month"
                spent = "no call counted yet" if line["spent"] is None else f"{money(line['spent'])} spent"
                rows.append(
                    (
                        f"Now, {period}",
                        f"{spent}, {money(line['held'])} reserved by calls in flight; "
                        f"resets in {durations.in_words(line['reset'])}",
                    )
                )
        except Exception:  # the admin page must not fail with the cache
            rows.append(("Now", "unknown: the cache is unreachable"))
        if spend["month"].unpriced:
            rows.append(("Without a price", f"{spend['month'].unpriced} call(s) this month, not in the spend"))
        body = format_html_join("", "<tr><th>{}</th><td>{}</td></tr>", rows)
        team = ""
        if obj.team_id:
            team = format_html(
                ' Its team\'s budgets and limits: <a href="{}">team {}</a>.',
                reverse("console:team", args=[obj.team_id]),
                obj.team.name,
            )
        return format_html(
            '<table id="key-spend">{}</table><p class="help">Spend is summed from the usage rollups, a few seconds '
            "behind the calls, per calendar day and month in the server's time zone. The “Now” lines are "
            "the live counters that admit or refuse calls.{}</p>",
            body,
            team,
        )

    @admin.display(description="Budget alerts")
    def budget_alerts(self, obj):
        if obj is None or obj.pk is None:
            return "—"
        alerts = list(BudgetAlert.objects.filter(scope="key", owner_id=obj.pk)[:10])
        link = reverse("console:alerts") + f"?scope=key&owner={obj.pk}"
        if not alerts:
            return format_html('None yet. <a href="{}">Alerts in the console</a>', link)
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{} % of the {} budget of {}</td><td>{}</td><td>{}</td></tr>",
            (
                (
                    timezone.localtime(alert.created).strftime("%Y-%m-%d %H:%M"),
                    alert.threshold,
                    "daily" if alert.budget == "budget_per_day" else "monthly",
                    money(alert.amount),
                    money(alert.spent),
                    alert.get_state_display(),
                )
                for alert in alerts
            ),
        )
        return format_html(
            '<table id="key-alerts"><tr><th>Crossed</th><th>Threshold</th><th>Spent</th><th>Sent</th></tr>{}</table>'
            '<p class="help"><a href="{}">All its alerts in the console</a></p>',
            rows,
            link,
        )

    def save_model(self, request, obj, form, change):
        reach = form.cleaned_data.get("routes")
        if change:
            key_service.update_key(obj, form.fields_given(), reach)
        else:
            # The full key exists only in this request: stored as a hash, shown once by response_add.
            _, request._issued_key = key_service.issue_key(form.fields_given(), reach, key=obj)

    def save_related(self, request, form, formsets, change):
        pass  # the key's routes were saved with it, by the service layer

    def delete_model(self, request, obj):
        key_service.delete_key(obj)

    def delete_queryset(self, request, queryset):
        for key in queryset:
            key_service.delete_key(key)

    def response_add(self, request, obj, post_url_continue=None):
        return self.show_once(request, obj, request._issued_key)

    @staticmethod
    def show_once(request, key, secret: str, rotated: bool = False):
        """Redirect after the POST, so that reloading the next page cannot issue a second secret.
        The secret waits in the session, sealed, under a one-time token and is removed when first
        shown (routes_admin/shown_once.py)."""
        token = shown_once.keep(request.session, key.pk, secret)
        issued = reverse("admin:routes_admin_apikey_issued", args=[key.pk, token])
        return redirect(issued + ("?rotated=1" if rotated else ""))

    def get_urls(self):
        issued = path(
            "<int:key_id>/issued/<str:token>/",
            self.admin_site.admin_view(self.issued_view),
            name="routes_admin_apikey_issued",
        )
        rotate = path(
            "<int:key_id>/rotate/", self.admin_site.admin_view(self.rotate_view), name="routes_admin_apikey_rotate"
        )
        revoke = path(
            "<int:key_id>/revoke/", self.admin_site.admin_view(self.revoke_view), name="routes_admin_apikey_revoke"
        )
        return [issued, rotate, revoke, *super().get_urls()]

    def change_view(self, request, object_id, form_url="", extra_context=None):
        key = self.get_object(request, object_id)
        can_revoke = key is not None and key.revoked is None and self.has_change_permission(request, key)
        return super().change_view(request, object_id, form_url, {**(extra_context or {}), "can_revoke": can_revoke})

    def revoke_view(self, request, key_id):
        """The key's own Revoke button: says what stops working and for whom, then revokes on POST."""
        key = get_object_or_404(APIKey, pk=key_id)
        if not self.has_change_permission(request, key):
            raise PermissionDenied
        change_url = reverse("admin:routes_admin_apikey_change", args=[key.pk])
        if request.method == "POST" and request.POST.get("post") == "yes":
            self.revoke_keys(request, [key])
            return redirect(change_url)
        return self.revoke_confirmation(request, [key] if key.revoked is None else [], request.path, change_url)

    def revoke_confirmation(self, request, keys, action_url: str, cancel_url: str):
        context = {
            **self.admin_site.each_context(request),
            "keys": keys,
            "action_url": action_url,
            "cancel_url": cancel_url,
            "opts": self.model._meta,
            "title": "Revoke this key?" if len(keys) == 1 else f"Revoke {len(keys)} keys?",
        }
        return TemplateResponse(request, "admin/routes_admin/apikey/revoke.html", context)

    def revoke_keys(self, request, keys) -> None:
        count = 0
        for key in keys:
            if key.revoked is None:
                key_service.revoke_key(key)  # one save per key so every process hears of it
                count += 1
        self.message_user(request, f"Revoked {count} key(s): calls with them now get 401.", messages.SUCCESS)

    @admin.display(description="Secret")
    def secret_rotation(self, obj):
        if obj is None or obj.pk is None:
            return "Shown once, when the key is saved."
        since = f"Last rotated {obj.rotated:%Y-%m-%d %H:%M %Z}. " if obj.rotated else ""
        # The "Rotate the secret…" button is with the page's tools, for roles that may change keys.
        return (
            format_html('{}<span id="old-secret">{}</span>', since, old_secret_line(obj)) if since else "Never rotated."
        )

    def rotate_view(self, request, key_id):
        """A new secret for the same key (its limits, routes and usage stay), shown once; the old
        secret works for the grace period given, then is refused everywhere."""
        key = get_object_or_404(APIKey, pk=key_id)
        if not self.has_change_permission(request, key):
            raise PermissionDenied
        error = ""
        most = int(key_service.MAX_GRACE.total_seconds() // 60)
        if request.method == "POST":
            minutes = request.POST.get("grace_minutes", "0").strip() or "0"
            try:
                if not minutes.isdigit() or len(minutes) > 9:
                    raise ServiceError({"grace": ["not a whole number"]})
                secret = key_service.rotate_key(key, timedelta(minutes=int(minutes)))
                return self.show_once(request, key, secret, rotated=True)
            except ServiceError:
                error = f"Give the grace period in whole minutes, from 0 to {most} ({key_service.MAX_GRACE.days} days)."
        context = {
            **self.admin_site.each_context(request),
            "key": key,
            "most_minutes": most,
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
        rotated = request.GET.get("rotated") == "1" and key.rotated is not None
        context = {
            **self.admin_site.each_context(request),
            "key": key,
            "secret": shown_once.take(request.session, key.pk, token),
            "opts": self.model._meta,
            "title": "Secret rotated" if rotated else "API key issued",
            "rotated": rotated,
            "old_secret": old_secret_line(key) if rotated else "",
        }
        response = TemplateResponse(request, "admin/routes_admin/apikey/issued.html", context)
        response["Cache-Control"] = "no-store"  # the secret must not stay in any cache
        return response

    @admin.action(description="Revoke the selected keys…", permissions=["change"])
    def revoke(self, request, queryset):
        """First a page that names the keys, their owners and routes; the revocation on its POST."""
        keys = list(queryset.filter(revoked__isnull=True).select_related("user").prefetch_related("routes"))
        if request.POST.get("post") == "yes":
            self.revoke_keys(request, keys)
            return None
        changelist = reverse("admin:routes_admin_apikey_changelist")
        return self.revoke_confirmation(request, keys, changelist, changelist)

    @admin.action(description="Reset the quota counters of the selected keys", permissions=["change"])
    def reset_quota_counters(self, request, queryset):
        capped = list(Route.objects.filter(quota_plan__isnull=False).select_related("quota_plan"))
        count = 0
        for key in queryset.select_related("quota_plan"):
            with transaction.atomic():  # the usage rows go only with their history entry
                history.record_usage_reset(key, reset_quotas(key, capped))
            count += 1
        self.message_user(
            request,
            f"Reset the counters of {count} key(s): request windows, token counters and this month's usage totals "
            "start again from zero (the request log keeps the history).",
            messages.SUCCESS,
        )


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


# Pages in modules of their own: target health (circuit breakers), the read-only request log,
# the price list and teams, management tokens.
from . import admin_breakers, admin_requestlog, admin_spend, admin_tokens  # noqa: E402,F401
