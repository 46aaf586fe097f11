from django.contrib import admin

from .models import Job, WebhookDelivery


class WebhookDeliveryInline(admin.TabularInline):
    model = WebhookDelivery
    extra = 0
    can_delete = False
    readonly_fields = ["attempt", "created", "status", "error", "duration_ms"]

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    """Read-only: jobs change through the API and the workers."""

    list_display = ["id", "route_name", "status", "attempts", "created", "finished", "response_status"]
    list_filter = ["status", "route_name"]
    search_fields = ["id", "request_id", "path"]
    raw_id_fields = ["api_key", "route"]
    exclude = ["body", "response_body"]
    inlines = [WebhookDeliveryInline]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
