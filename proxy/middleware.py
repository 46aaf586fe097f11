"""Gives every request an id and a client address, and returns the id on every response."""

import re
import uuid

from django.conf import settings

# A client's id is kept when it is a sane token; anything else is replaced, never echoed.
SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


def request_id_for(value: str | None) -> str:
    if value and SANE_REQUEST_ID.match(value):
        return value
    return uuid.uuid4().hex


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


class RequestIdMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        request.request_id = request_id_for(request.META.get("HTTP_X_REQUEST_ID"))
        request.client_ip = client_ip_for(request.META)
        response = self.get_response(request)
        response["X-Request-ID"] = request.request_id
        return response
