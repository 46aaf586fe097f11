"""/api/schema/ and /api/docs/: for signed-in users and management tokens, unless made public.

The schema names every endpoint, filter and field of the back office: a map worth keeping from
strangers. GATEWAY_API_DOCS_PUBLIC=1 serves both to anyone (read at each request, so a test can
switch it). The schema answers a stranger the API's JSON 401; the docs page, which people open
in a browser, sends them to the admin's sign-in and back.
"""

from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.authentication import SessionAuthentication
from rest_framework.permissions import BasePermission

from . import errors
from .authentication import ManagementTokenAuthentication

LOGIN_URL = "/admin/login/"


class SignedInUnlessPublic(BasePermission):
    def has_permission(self, request, view) -> bool:
        return settings.GATEWAY_API_DOCS_PUBLIC or bool(request.user and request.user.is_authenticated)


class SchemaView(SpectacularAPIView):
    authentication_classes = [ManagementTokenAuthentication, SessionAuthentication]
    permission_classes = [SignedInUnlessPublic]

    def get_exception_handler(self):
        return errors.exception_handler


class DocsView(SpectacularSwaggerView):
    authentication_classes = [ManagementTokenAuthentication, SessionAuthentication]
    permission_classes = [SignedInUnlessPublic]

    def get_exception_handler(self):
        return errors.exception_handler

    def permission_denied(self, request, message=None, code=None):
        if not settings.GATEWAY_API_DOCS_PUBLIC and not request.successful_authenticator:
            raise SignInFirst()
        super().permission_denied(request, message, code)

    def handle_exception(self, exc):
        if isinstance(exc, SignInFirst):
            return redirect_to_login(self.request.get_full_path(), LOGIN_URL)
        return super().handle_exception(exc)


class SignInFirst(Exception):
    """A stranger on the docs page: answered with the way to the sign-in page."""
