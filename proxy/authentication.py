"""Step 1: the API key, from `Authorization: Bearer <key>` or `X-API-Key: <key>`."""

from django.utils import timezone

from routes_admin import keys

from .config import KeyInfo, Snapshot
from .errors import InvalidAPIKey


def key_from_headers(headers) -> str:
    """The secret the client sent; `headers` is looked up case-insensitively."""
    scheme, _, value = headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return headers.get("X-Api-Key", "").strip()


def check_key(raw: str, snapshot: Snapshot) -> KeyInfo:
    """The usable key for this secret, or InvalidAPIKey with the reason."""
    if not raw:
        raise InvalidAPIKey(auth="missing")
    prefix = keys.prefix_of(raw)
    key = snapshot.key(prefix) if prefix else None
    # The prefix only finds the row; the secret is checked by comparing hashes in constant time.
    if key is None or not keys.matches(raw, key.hashed_secret):
        raise InvalidAPIKey("The API key is not valid.", auth="unknown")
    return usable(key)


def usable(key: KeyInfo) -> KeyInfo:
    """The key, unless it is revoked, disabled or expired (InvalidAPIKey says which, and names
    the key: its secret was proven, so the log row may say whose call was refused)."""
    if key.revoked is not None:
        raise InvalidAPIKey("The API key has been revoked.", auth="revoked", key=key)
    if not key.enabled:
        raise InvalidAPIKey("The API key is disabled.", auth="disabled", key=key)
    if key.expires is not None and key.expires <= timezone.now():
        raise InvalidAPIKey("The API key has expired.", auth="expired", key=key)
    if key.grace_ends is not None and key.grace_ends <= timezone.now():
        raise InvalidAPIKey("The API key has been rotated; use its new secret.", auth="rotated", key=key)
    return key
