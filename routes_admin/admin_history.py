"""Admin page "Change history": who changed what, when, from where, before and after. Read-only for all.

Replaces django-auditlog's own admin page, which lets a deletion elsewhere in the admin cascade
into the history. Here nobody, superusers included, may add, change or delete an entry.
"""

import auditlog.admin  # noqa: F401  (registers LogEntry's page, replaced below, whatever the app order)
from auditlog.filters import ResourceTypeFilter
from auditlog.mixins import LogEntryAdminMixin
from auditlog.models import LogEntry
from django.contrib import admin
from django.contrib.auth import admin as auth_admin
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import PermissionDenied, ValidationError
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


def dotted(permissions) -> set[str]:
    return {f"{p.content_type.app_label}.{p.codename}" for p in permissions.select_related("content_type")}


def granted(cleaned: dict, before: set[str], fields) -> set[str]:
    """The permissions a people form grants: its `permissions`/`user_permissions` and its groups'."""
    if not any(name in cleaned for name in fields):
        return before
    found = set()
    for name in fields:
        value = cleaned.get(name)
        if value is None:
            continue
        found |= dotted(Permission.objects.filter(group__in=value) if name == "groups" else value)
    return found


def no_climbing(form_class, editor, fields):
    """The form, refusing to grant permissions (directly or through groups) its editor lacks."""

    class Form(form_class):
        def clean(self):
            cleaned = super().clean()
            if editor.is_superuser:
                return cleaned
            instance = self.instance
            before = set()
            if instance.pk is not None:
                if isinstance(instance, Group):
                    before = dotted(instance.permissions.all())
                else:
                    before = dotted(instance.user_permissions.all()) | dotted(
                        Permission.objects.filter(group__user=instance)
                    )
            lacking = sorted(granted(cleaned, before, fields) - before - editor.get_all_permissions())
            if lacking:
                raise ValidationError(
                    f"Only a superuser may grant permissions you do not hold yourself: {', '.join(lacking)}."
                )
            return cleaned

    return Form


@admin.register(get_user_model())
class UserAdmin(HistoryLinkMixin, auth_admin.UserAdmin):
    """Django's, except that roles cannot be climbed: only a superuser makes a superuser, changes
    or deletes one (its staff flag and password included), or grants permissions beyond their own."""

    def get_readonly_fields(self, request, obj=None):
        fields = list(super().get_readonly_fields(request, obj))
        return fields if request.user.is_superuser else [*fields, "is_superuser"]

    def has_change_permission(self, request, obj=None):
        if obj is not None and obj.is_superuser and not request.user.is_superuser:
            return False  # the page is read-only; the password form answers 403
        return super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None):
        if obj is not None and obj.is_superuser and not request.user.is_superuser:
            return False  # also refuses "delete selected" on a list holding a superuser
        return super().has_delete_permission(request, obj)

    def get_form(self, request, obj=None, **kwargs):
        return no_climbing(super().get_form(request, obj, **kwargs), request.user, ["groups", "user_permissions"])


@admin.register(Group)
class GroupAdmin(HistoryLinkMixin, auth_admin.GroupAdmin):
    def get_form(self, request, obj=None, **kwargs):
        return no_climbing(super().get_form(request, obj, **kwargs), request.user, ["permissions"])
