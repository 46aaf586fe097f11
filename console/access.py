"""Who may open a console page: a signed-in user allowed to view the request log.

The console changes nothing: its pages answer GET (and HEAD) only. Admins change things in the
admin. Sign-in goes through the admin's login page.
"""

from functools import wraps

from django.contrib.auth.decorators import login_required, permission_required
from django.views.decorators.http import require_safe

from . import zones

LOGIN_URL = "/admin/login/"
PERMISSION = "routes_admin.view_requestlog"


def console_page(view):
    """GET only, signed in (else to the admin's login), with the permission (else 403), in the
    user's time zone."""

    @wraps(view)
    def in_zone(request, *args, **kwargs):
        with zones.activated(request):
            return view(request, *args, **kwargs)

    guarded = permission_required(PERMISSION, raise_exception=True)(in_zone)
    return require_safe(login_required(guarded, login_url=LOGIN_URL))
