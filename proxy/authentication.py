"""Step 1: the API key, from `Authorization: Bearer <key>` or `X-API-Key: <key>`."""

from django.utils import timezone
from rest_framework.authentication import BaseAuthentication

from routes_admin import keys

from . import config
from .errors import InvalidAPIKey


def key_from_headers(meta: dict) -> str:
    auth = meta.get("HTTP_AUTHORIZATION", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return meta.get("HTTP_X_API_KEY", "").strip()


def check_key(raw: str) -> config.KeyInfo:
    """The usable key for this secret, or InvalidAPIKey with the reason."""
    if not raw:
        raise InvalidAPIKey()
    prefix = keys.prefix_of(raw)
    key = config.current().key(prefix) if prefix else None
    # The prefix only finds the row; the secret is checked by comparing hashes in constant time.
    if key is None or not keys.matches(raw, key.hashed_secret):
        raise InvalidAPIKey("The API key is not valid.")
    if key.revoked is not None:
        raise InvalidAPIKey("The API key has been revoked.")
    if not key.enabled:
        raise InvalidAPIKey("The API key is disabled.")
    if key.expires is not None and key.expires <= timezone.now():
        raise InvalidAPIKey("The API key has expired.")
    if key.grace_ends is not None and key.grace_ends <= timezone.now():
        raise InvalidAPIKey("The API key has been rotated; use its new secret.")
    return key


class APIKeyAuthentication(BaseAuthentication):
    def authenticate(self, request):
        call = request._request.gateway_call
        key = check_key(key_from_headers(request._request.META))
        call.key = key
        return (key, key)
