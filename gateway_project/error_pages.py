"""Django's error views: the admin's own HTML pages for people in the admin, the gateway's JSON for the rest."""

from proxy import handlers
from routes_admin import admin_pages

ADMIN_PATH = "/admin/"


def permission_denied(request, exception=None):
    if request.path_info.startswith(ADMIN_PATH):
        return admin_pages.permission_denied(request, exception)
    return handlers.permission_denied(request, exception)


def not_found(request, exception=None):
    if request.path_info.startswith(ADMIN_PATH):
        return admin_pages.not_found(request, exception)
    return handlers.not_found(request, exception)
