"""Admin page "Change history": who changed what, when, from where, before and after. Read-only for all.

Replaces django-auditlog's own admin page, which lets a deletion elsewhere in the admin cascade
into the history. Here nobody, superusers included, may add, change or delete an entry.
"""

from auditlog.filters import ResourceTypeFilter
from auditlog.mixins import LogEntryAdminMixin
from auditlog.models import LogEntry
from django.contrib import admin
from django.contrib.auth import admin as auth_admin
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import PermissionDenied
from django.shortcuts import redirect
from django.urls import reverse

from . import history

admin.site.unregister(LogEntry)


class ActorFilter(admin.SimpleListFilter):
    """By user: only the users who have changed something are listed."""

    title = "user"
    parameter_name = "actor"

    def lookups(self, request, model_admin):
        User = get_user_model()
        acted = LogEntry.objects.filter(actor__isnull=False).values("actor").distinct()
        return [(user.pk, user.get_username()) for user in User.objects.filter(pk__in=acted).order_by("username")]

    def queryset(self, request, queryset):
        return queryset.filter(actor_id=self.value()) if self.value() else queryset


@admin.register(LogEntry)
class ChangeHistoryAdmin(LogEntryAdminMixin, admin.ModelAdmin):
    list_display = ["created", "action", "resource_url", "msg_short", "author", "remote_addr"]
    list_filter = ["action", ResourceTypeFilter, ActorFilter, "timestamp"]
    list_select_related = ["content_type", "actor"]
    search_fields = ["object_repr", "object_pk", "actor__username", "remote_addr"]
    date_hierarchy = "timestamp"
    show_full_result_count = False
    fieldsets = [
        (None, {"fields": ["created", "action", "resource_url", "author", "remote_addr"]}),
        ("Before and after", {"fields": ["msg"]}),
    ]
    readonly_fields = ["created", "action", "resource_url", "author", "remote_addr", "msg"]

    def get_queryset(self, request):
        self.request = request  # LogEntryAdminMixin builds links from it
        return super().get_queryset(request)

    @admin.display(description="Who")
    def author(self, obj):
        return history.author(obj)

    # Append-only, for every role and for superusers too (the API and the database refuse as well).
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class HistoryLinkMixin:
    """The object page's "History" button opens this object's entries in the change history."""

    def history_view(self, request, object_id, extra_context=None):
        if not self.has_view_permission(request):
            raise PermissionDenied
        type_id = ContentType.objects.get_for_model(self.model).pk
        url = reverse("admin:auditlog_logentry_changelist")
        return redirect(f"{url}?resource_type={type_id}&object_pk={object_id}")


# Users and groups: the same link (their admin pages are otherwise Django's own).
admin.site.unregister(get_user_model())
admin.site.unregister(Group)


@admin.register(get_user_model())
class UserAdmin(HistoryLinkMixin, auth_admin.UserAdmin):
    pass


@admin.register(Group)
class GroupAdmin(HistoryLinkMixin, auth_admin.GroupAdmin):
    pass
