"""The admin console: routes and targets, keys, quota plans, and the read-only request log."""

from django.contrib import admin, messages
from django.template.response import TemplateResponse
from django.utils import timezone

from . import keys
from .forms import UpstreamTargetForm
from .models import APIKey, KeyUsage, QuotaPlan, RequestLog, Route, UpstreamTarget

admin.site.site_header = "AI gateway"
admin.site.site_title = "AI gateway"
admin.site.index_title = "Configuration and audit"


class UpstreamTargetInline(admin.StackedInline):
    model = UpstreamTarget
    form = UpstreamTargetForm
    extra = 0
    readonly_fields = ["stored_credential"]
    fields = [
        ("name", "url"), ("weight", "position", "enabled"), ("credential_header", "credential_value"),
        ("stored_credential", "clear_credential"), "model_aliases",
    ]

    @admin.display(description="Stored credential")
    def stored_credential(self, obj):
        return obj.masked_credential or "—"


@admin.register(Route)
class RouteAdmin(admin.ModelAdmin):
    list_display = ["name", "path_prefix", "methods", "model_names", "priority", "strategy", "target_count", "enabled"]
    list_filter = ["enabled", "strategy"]
    search_fields = ["name", "path_prefix", "model_names", "targets__url"]
    list_select_related = ["quota_plan", "fallback"]
    inlines = [UpstreamTargetInline]
    fieldsets = [
        (None, {"fields": ["name", "enabled", "path_prefix", "methods", "model_names", "priority"]}),
        ("Content conditions", {"fields": ["match_headers", "match_body"], "classes": ["collapse"]}),
        ("Upstream behaviour", {"fields": [
            "strategy", ("connect_timeout", "read_timeout"), "max_body_bytes",
            ("max_attempts", "retry_statuses", "retry_non_idempotent"), "fallback",
        ]}),
        ("Quota", {"fields": ["quota_plan"]}),
    ]

    def get_queryset(self, request):
        from django.db.models import Count

        return super().get_queryset(request).annotate(_targets=Count("targets"))

    @admin.display(description="Targets", ordering="_targets")
    def target_count(self, obj):
        return obj._targets


@admin.register(QuotaPlan)
class QuotaPlanAdmin(admin.ModelAdmin):
    list_display = ["name", *QuotaPlan.LIMIT_FIELDS]
    search_fields = ["name"]


@admin.register(APIKey)
class APIKeyAdmin(admin.ModelAdmin):
    list_display = ["name", "display_prefix", "owner", "quota_plan", "created", "expires", "revoked", "enabled", "all_routes"]
    list_filter = ["enabled", "all_routes", ("revoked", admin.EmptyFieldListFilter), "quota_plan", "created"]
    search_fields = ["name", "owner", "prefix"]
    list_select_related = ["quota_plan", "user"]
    raw_id_fields = ["user"]
    filter_horizontal = ["routes"]
    readonly_fields = ["display_prefix", "created", "revoked"]
    actions = ["revoke"]
    fieldsets = [
        (None, {"fields": ["name", "owner", "user", "display_prefix", "created", "expires", "revoked", "enabled"]}),
        ("Reach", {"fields": ["all_routes", "routes"]}),
        ("Quota", {"fields": ["quota_plan", *APIKey.LIMIT_FIELDS],
                   "description": "Limits set here override the plan's; empty means the plan's value."}),
    ]

    def save_model(self, request, obj, form, change):
        if not change:
            # The full key exists only in this request: stored as a hash, shown once by response_add.
            request._issued_key, obj.prefix, obj.hashed_secret = keys.generate()
        super().save_model(request, obj, form, change)

    def response_add(self, request, obj, post_url_continue=None):
        context = {**self.admin_site.each_context(request), "key": obj, "secret": request._issued_key,
                   "opts": self.model._meta, "title": "API key issued"}
        response = TemplateResponse(request, "admin/routes_admin/apikey/issued.html", context)
        response["Cache-Control"] = "no-store"  # the secret must not stay in any cache
        return response

    @admin.action(description="Revoke the selected keys")
    def revoke(self, request, queryset):
        count = 0
        for key in queryset.filter(revoked__isnull=True):
            key.revoked = timezone.now()
            key.save(update_fields=["revoked"])  # one save per key so every process hears of it
            count += 1
        self.message_user(request, f"Revoked {count} key(s).", messages.SUCCESS)


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
        "created", "request_id", "key_prefix", "route_name", "method", "path", "status", "latency_ms",
        "target", "attempts", "total_tokens", "error_type", "client_ip",
    ]
    list_filter = ["status", "method", "route_name", "error_type", "streamed", "created"]
    search_fields = ["request_id", "path", "key_prefix", "route_name", "target", "client_ip"]
    date_hierarchy = "created"
    show_full_result_count = False  # counting millions of rows on every page is slow


@admin.register(KeyUsage)
class KeyUsageAdmin(ReadOnlyAdmin):
    list_display = ["day", "api_key", "requests", "prompt_tokens", "completion_tokens", "total_tokens"]
    list_filter = ["day"]
    search_fields = ["api_key__name", "api_key__prefix"]
    list_select_related = ["api_key"]
