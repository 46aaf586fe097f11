"""The client's real address behind the configured trusted proxies.

Shared by the proxy (log rows, forwarding headers), the sign-in lockout and the change history
(who changed what, from where), so all name the same address for the same request.
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


def client_ip_of(request) -> str:
    """The client address of a Django request (django-axes keys its sign-in lockout on it)."""
    return client_ip_for(request.META)


def trusted_chain(meta: dict) -> str:
    """X-Forwarded-For as the gateway can vouch for it, client first: with TRUSTED_PROXY_COUNT
    proxies in front, the entries they added, then the proxy that connected; with none, only the
    connecting address. What a client wrote before them is dropped. Its first address is
    client_ip_for's."""
    peer = meta.get("REMOTE_ADDR", "")
    hops = settings.TRUSTED_PROXY_COUNT
    if hops:
        chain = [part.strip() for part in meta.get("HTTP_X_FORWARDED_FOR", "").split(",") if part.strip()]
        if len(chain) >= hops:
            return ", ".join([*chain[-hops:], peer])
    return peer
