"""Admin page "Management tokens": who holds a token for the management API, and revoking them.

An Admin sees and may revoke everyone's tokens; every other role sees and may revoke only its own
(as the API's /api/tokens/ does). Tokens are issued by `manage.py create_token` or the API, never
here: the secret is shown once, where it is made. Revocations go through services/tokens.py, so the
change history records them with who made them.
"""

from django.contrib import admin, messages

from . import keys, roles
from .admin_parts import RevokedFilter
from .models import ManagementToken
from .services import tokens


@admin.register(ManagementToken)
class ManagementTokenAdmin(admin.ModelAdmin):
    list_display = ["name", "shown_prefix", "user", "created", "last_used", "revoked"]
    list_filter = [RevokedFilter]
    search_fields = ["name", "prefix", "user__username"]
    list_select_related = ["user"]
    fields = ["name", "shown_prefix", "user", "created", "last_used", "revoked"]
    readonly_fields = fields
    actions = ["revoke"]

    @staticmethod
    def sees_everyones(request) -> bool:
        return roles.user_role(request.user) == roles.ADMIN

    def get_queryset(self, request):
        found = super().get_queryset(request)
        return found if self.sees_everyones(request) else found.filter(user=request.user)

    @admin.display(description="Token", ordering="prefix")
    def shown_prefix(self, obj):
        return f"{keys.TOKEN_START}{obj.prefix}_…"

    # Any role may look at (and revoke) the tokens it is shown: its own, or everyone's for an Admin.
    def has_module_permission(self, request):
        return roles.user_role(request.user) is not None

    def has_view_permission(self, request, obj=None):
        if roles.user_role(request.user) is None:
            return False
        return obj is None or self.sees_everyones(request) or obj.user_id == request.user.pk

    def has_revoke_permission(self, request):
        return self.has_module_permission(request)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False  # revoked, not deleted: the history keeps who held what

    @admin.action(description="Revoke the selected tokens", permissions=["revoke"])
    def revoke(self, request, queryset):
        count = 0
        for token in self.get_queryset(request).filter(pk__in=queryset.values("pk"), revoked__isnull=True):
            tokens.revoke_token(token)
            count += 1
        self.message_user(request, f"Revoked {count} token(s): the API refuses them from now on.", messages.SUCCESS)
