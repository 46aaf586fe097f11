"""Webhook signatures: every API key signs with its own secret, derived when needed, never stored.

    key's secret = "whsec_" + hex HMAC-SHA256(GATEWAY_WEBHOOK_SECRET, "webhook-signing-secret\\n<key id>\\n<key prefix>")
    signature    = "sha256=" + hex HMAC-SHA256(key's secret, "<timestamp>\\n<callback URL>\\n" + body)

Derived, not stored: the database holds only hashes of keys, from which nothing can be derived,
and a stored secret would need its own encryption key, which is this server secret again. So
nothing new sits in the database or its backups (a dump alone cannot sign), no migration, and
the key's owner can fetch it whenever a receiver is set up (GET /jobs/webhook-secret, with the
key). Rotating the key changes its prefix and so its signing secret; rotating
GATEWAY_WEBHOOK_SECRET changes every key's.

Budget alerts (jobs/alerts.py) belong to no key: they are signed the same way with a secret of
their own, derived alike from the server secret (`alert_secret`, shown by `manage.py
alert_webhook_secret`).

The signature covers the timestamp (receivers refuse old ones: replays) and the destination
(callback URL as the job shows it): a delivery captured at one receiver does not verify at another.
"""

import hashlib
import hmac

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from routes_admin.models import APIKey


def key_secret(key_id: int, prefix: str) -> str:
    if not settings.GATEWAY_WEBHOOK_SECRET:  # settings.py requires it with GATEWAY_WEBHOOK_HOSTS
        raise ImproperlyConfigured("GATEWAY_WEBHOOK_SECRET is not set: webhooks cannot be signed.")
    message = f"webhook-signing-secret\n{key_id}\n{prefix}".encode()
    return "whsec_" + hmac.new(settings.GATEWAY_WEBHOOK_SECRET.encode(), message, hashlib.sha256).hexdigest()


def alert_secret() -> str:
    """The budget alerts' signing secret (a webhook receiver set up for them verifies with it)."""
    if not settings.GATEWAY_WEBHOOK_SECRET:
        raise ImproperlyConfigured("GATEWAY_WEBHOOK_SECRET is not set: budget alert webhooks cannot be signed.")
    message = b"budget-alert-signing-secret"
    return "whsec_" + hmac.new(settings.GATEWAY_WEBHOOK_SECRET.encode(), message, hashlib.sha256).hexdigest()


def secret_for_key(key_id: int) -> str | None:
    """The key's signing secret now (its current prefix); None when the key is gone."""
    prefix = APIKey.objects.filter(id=key_id).values_list("prefix", flat=True).first()
    return key_secret(key_id, prefix) if prefix is not None else None


def signature(secret: str, timestamp: str, url: str, body: bytes) -> str:
    message = f"{timestamp}\n{url}\n".encode() + body
    return "sha256=" + hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()
