"""Admin page "Target health": every upstream target with its circuit breaker state, and a reset.

The state comes from the shared cache (see proxy/breaker.py), read with one get_many per page.
Targets are edited on their route's page; this page only shows and resets breakers.
"""

from datetime import UTC, datetime

from django.contrib import admin, messages
from django.contrib.admin.views.main import ChangeList
from django.shortcuts import redirect

from proxy import state

from .models import UpstreamTarget


class BreakerChangeList(ChangeList):
    def get_results(self, request):
        super().get_results(request)
        try:
            states = state.breaker_states(target.id for target in self.result_list)
        except Exception:  # the cache is down: show the targets anyway
            states = {}
        for target in self.result_list:
            target.breaker = states.get(
                target.id, {"state": "unknown (cache unreachable)", "failures": None, "opened": None, "until": None}
            )


def _time(timestamp: float | None) -> str:
    if timestamp is None:
        return "—"
    return datetime.fromtimestamp(timestamp, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@admin.register(UpstreamTarget)
class TargetHealthAdmin(admin.ModelAdmin):
    list_display = ["name", "route", "url", "enabled", "breaker_state", "recent_failures", "opened", "closed_until"]
    list_display_links = None  # targets are edited on their route's page
    list_filter = ["enabled", "route"]
    list_select_related = ["route"]
    search_fields = ["name", "url", "route__name"]
    actions = ["reset_breakers"]

    def get_changelist(self, request, **kwargs):
        return BreakerChangeList

    def changelist_view(self, request, extra_context=None):
        extra_context = {"title": "Target health (circuit breakers)", **(extra_context or {})}
        return super().changelist_view(request, extra_context)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        # Targets (and their masked credentials) are edited inline on the route's page only.
        target = self.get_object(request, object_id)
        if target is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        return redirect("admin:routes_admin_route_change", target.route_id)

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        # No delete of its own here (targets are removed on their route's page), but deleting a
        # route deletes its targets, and Django's delete page asks this admin about each of them.
        return obj is not None and super().has_delete_permission(request, obj)

    @admin.display(description="Breaker")
    def breaker_state(self, obj):
        return obj.breaker["state"]

    @admin.display(description="Failures in window")
    def recent_failures(self, obj):
        return obj.breaker["failures"]

    @admin.display(description="Opened")
    def opened(self, obj):
        return _time(obj.breaker["opened"])

    @admin.display(description="Skipped until")
    def closed_until(self, obj):
        return _time(obj.breaker["until"])

    @admin.action(description="Reset the circuit breaker of the selected targets", permissions=["change"])
    def reset_breakers(self, request, queryset):
        count = 0
        for target in queryset:
            state.reset_breaker(target.id)
            count += 1
        self.message_user(request, f"Reset the breaker of {count} target(s); they take calls again.", messages.SUCCESS)
