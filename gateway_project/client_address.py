"""The client's real address behind the configured trusted proxies.

Shared by the proxy (log rows) and the change history (who changed what, from where), so both
name the same address for the same request.
"""

from django.conf import settings


def client_ip_for(meta: dict) -> str:
    """REMOTE_ADDR, or with TRUSTED_PROXY_COUNT proxies in front, the address they saw."""
    hops = settings.TRUSTED_PROXY_COUNT
    if hops:
        chain = [part.strip() for part in meta.get("HTTP_X_FORWARDED_FOR", "").split(",") if part.strip()]
        if len(chain) >= hops:
            return chain[-hops]
    return meta.get("REMOTE_ADDR", "")
