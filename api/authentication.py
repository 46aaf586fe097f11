"""Management tokens: `Authorization: Bearer gwm_...` on the management API (/api/)."""

from datetime import timedelta

from django.utils import timezone
from rest_framework import authentication, exceptions

from routes_admin.models import ManagementToken

# last_used is written at most this often per token, not on every call.
LAST_USED_PRECISION = timedelta(minutes=1)


class ManagementTokenAuthentication(authentication.BaseAuthentication):
    """A token acts as its user, with that user's groups and permissions (and so its role)."""

    def authenticate(self, request):
        scheme, _, value = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
        if scheme.lower() != "bearer":
            return None  # no token: maybe a session
        token = ManagementToken.objects.for_secret(value.strip())
        if token is None:
            raise exceptions.AuthenticationFailed("The management token is not valid, or has been revoked.")
        now = timezone.now()
        if token.last_used is None or now - token.last_used > LAST_USED_PRECISION:
            ManagementToken.objects.filter(pk=token.pk).update(last_used=now)
        return token.user, token

    def authenticate_header(self, request) -> str:
        return 'Bearer realm="api"'
