"""Which headers cross the gateway, in each direction."""

import ipaddress
import re

# RFC 9110 §7.6.1: connection-specific fields are never forwarded; Proxy-Connection and
# Keep-Alive are their pre-standard forms. Trailer and Proxy-Authenticate/-Authorization are
# hop-by-hop too (RFC 2616 §13.5.1, still what proxies drop).
HOP_BY_HOP = frozenset(
    {
        "connection",
        "proxy-connection",
        "keep-alive",
        "te",
        "transfer-encoding",
        "upgrade",
        "trailer",
        "proxy-authenticate",
        "proxy-authorization",
    }
)
# Never sent upstream: the client's gateway credentials, the gateway's own session cookie,
# and what the gateway sets itself.
NOT_FORWARDED = HOP_BY_HOP | {
    "authorization",
    "x-api-key",
    "cookie",
    "host",
    "content-length",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-request-id",
    # Who the client is: only the gateway says (forwarded_headers), from the addresses it trusts.
    # The rest of this family are names upstreams and their frameworks also read.
    "forwarded",
    "x-real-ip",
    "x-forwarded-port",
    "x-forwarded-server",
    "x-original-forwarded-for",
    "x-client-ip",
    "x-cluster-client-ip",
    "true-client-ip",
    "client-ip",
    "cf-connecting-ip",
    "fastly-client-ip",
}
PLAIN_NODE = re.compile(r"[0-9A-Za-z._-]+")  # an IPv4 address or an obfuscated node: an RFC 7239 token
NOT_RETURNED = HOP_BY_HOP | {"x-request-id", "server", "date"}


def connection_listed(value: str) -> set[str]:
    """Header names that a Connection header declares hop-by-hop."""
    return {name.strip().lower() for name in value.split(",") if name.strip()}


def upstream_request_headers(
    client_headers, target, *, request_id: str, client_ip: str, scheme: str, host: str, forwarded_for: str = ""
) -> dict:
    """Headers for the upstream request, from the client's."""
    listed = connection_listed(client_headers.get("Connection", ""))
    headers = {}
    for header, value in client_headers.items():
        lower = header.lower()
        if lower in NOT_FORWARDED or lower in listed or not value:
            continue
        headers[header] = value
    headers.update(forwarded_headers(client_ip, forwarded_for or client_ip, scheme=scheme, host=host))
    headers["X-Request-ID"] = request_id
    if target.credential_header:
        headers[target.credential_header] = target.credential_value
    return headers


def forwarded_node(address: str) -> str:
    """An address as RFC 7239 §6 writes it: IPv4 as it is, IPv6 in brackets and quotes."""
    if not address:
        return "unknown"
    if ":" not in address and PLAIN_NODE.fullmatch(address):
        return address
    try:
        ipaddress.IPv6Address(address)
        return f'"[{address}]"'
    except ValueError:
        return '"' + address.replace("\\", "").replace('"', "") + '"'


def forwarded_headers(client_ip: str, forwarded_for: str, *, scheme: str, host: str) -> dict:
    """X-Forwarded-*, X-Real-IP and Forwarded, made by the gateway from what it trusts
    (forwarded_for: gateway_project/client_address.py trusted_chain)."""
    host_value = host.replace("\\", "").replace('"', "")
    return {
        "X-Forwarded-For": forwarded_for,
        "X-Forwarded-Proto": scheme,
        "X-Forwarded-Host": host,
        "X-Real-IP": client_ip,
        "Forwarded": f'for={forwarded_node(client_ip)};proto={scheme};host="{host_value}"',
    }


def client_response_headers(upstream_headers) -> list[tuple[str, str]]:
    """Headers of the upstream response that go back to the client."""
    listed = connection_listed(upstream_headers.get("Connection", ""))
    return [
        (name, value)
        for name, value in upstream_headers.items()
        if name.lower() not in NOT_RETURNED and name.lower() not in listed
    ]
