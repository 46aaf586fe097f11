"""Reserved paths first; every other path goes to the proxy."""

import re

from django.contrib import admin
from django.urls import include, path, re_path
from django.views.decorators.csrf import csrf_exempt
from django.views.generic import RedirectView

from proxy import handlers, health, metrics
from proxy.views import proxy_view
from routes_admin import admin_pages
from routes_admin.models import RESERVED_AREAS, RESERVED_ENDPOINTS

# Every path but the reserved ones (routes_admin/models.py) goes to the proxy (gateway_project/middleware.py
# sends them there before this table is read; the pattern below names the view for the rest).
PROXIED = re.compile(rf"^(?!(?:{'|'.join(RESERVED_AREAS)})(?:/|$)|(?:{'|'.join(RESERVED_ENDPOINTS)})$)")

urlpatterns = [
    path("admin", RedirectView.as_view(url="/admin/")),  # APPEND_SLASH is off: proxied paths stay as sent
    path("admin/first-steps/", admin.site.admin_view(admin_pages.first_steps), name="first-steps"),
    path("admin/", admin.site.urls),
    path("console/", include("console.urls")),
    path("api/", include("api.urls")),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", metrics.metrics_view, name="metrics"),
    path("jobs/", include("jobs.urls")),
    re_path(PROXIED.pattern, proxy_view, name="proxy"),
    # Last: unknown reserved paths get the JSON 404 even with DEBUG on (Django's would be HTML),
    # whatever the method: without csrf_exempt a POST would get the CSRF check's HTML 403 instead.
    re_path(r"", csrf_exempt(handlers.not_found), name="not-found"),
]

handler400 = "proxy.handlers.bad_request"
handler403 = "gateway_project.error_pages.permission_denied"
handler404 = "gateway_project.error_pages.not_found"
handler500 = "proxy.handlers.server_error"
