"""The admin's own pages beyond its models: first steps ("View site"), and its 403 and 404 pages."""

from django.contrib import admin
from django.template.response import TemplateResponse
from django.urls import reverse

from .models import RESERVED_AREAS, RESERVED_ENDPOINTS


def admin_page(request, template: str, title: str, status: int = 200, **context) -> TemplateResponse:
    context = {**admin.site.each_context(request), "title": title, **context}
    return TemplateResponse(request, template, context, status=status)


def first_steps(request):
    """Where the admin's "View site" link leads: the gateway has no home page of its own."""
    return admin_page(
        request,
        "admin/first_steps.html",
        "First steps",
        gateway_url=request.build_absolute_uri("/").rstrip("/"),
        add_key_url=reverse("admin:routes_admin_apikey_add"),
        add_route_url=reverse("admin:routes_admin_route_add"),
        history_url=reverse("admin:auditlog_logentry_changelist"),
        reserved_areas=[f"/{name}/" for name in RESERVED_AREAS],
        reserved_endpoints=[f"/{name}" for name in RESERVED_ENDPOINTS],
    )


def permission_denied(request, exception=None):
    return admin_page(request, "admin/403.html", "Not allowed", status=403)


def not_found(request, exception=None):
    return admin_page(request, "admin/404.html", "Page not found", status=404)
