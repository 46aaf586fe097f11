"""Pieces several admin pages share (the key list, the tokens page, the read-only pages); they import
no admin page, so the pages can import them without a circle."""

from django.contrib import admin


class RevokedFilter(admin.SimpleListFilter):
    """ "revoked: yes / no", in words (Django's empty-field filter says "Empty / Not empty")."""

    title = "revoked"
    parameter_name = "revoked"

    def lookups(self, request, model_admin):
        return [("yes", "yes"), ("no", "no")]

    def queryset(self, request, queryset):
        if self.value() in ("yes", "no"):
            return queryset.filter(revoked__isnull=self.value() == "no")
        return queryset


class ReadOnlyAdmin(admin.ModelAdmin):
    """Auditors' view: nobody adds, changes or deletes rows here."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
