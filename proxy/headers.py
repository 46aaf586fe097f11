"""Which headers cross the gateway, in each direction."""

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
}
NOT_RETURNED = HOP_BY_HOP | {"x-request-id", "server", "date"}


def connection_listed(value: str) -> set[str]:
    """Header names that a Connection header declares hop-by-hop."""
    return {name.strip().lower() for name in value.split(",") if name.strip()}


def upstream_request_headers(
    client_headers, target, *, request_id: str, client_ip: str, scheme: str, host: str
) -> dict:
    """Headers for the upstream request, from the client's."""
    listed = connection_listed(client_headers.get("Connection", ""))
    headers = {}
    for header, value in client_headers.items():
        lower = header.lower()
        if lower in NOT_FORWARDED or lower in listed or not value:
            continue
        headers[header] = value
    prior = client_headers.get("X-Forwarded-For", "")
    headers["X-Forwarded-For"] = f"{prior}, {client_ip}" if prior else client_ip
    headers["X-Forwarded-Proto"] = scheme
    headers["X-Forwarded-Host"] = host
    headers["X-Request-ID"] = request_id
    if target.credential_header:
        headers[target.credential_header] = target.credential_value
    return headers


def client_response_headers(upstream_headers) -> list[tuple[str, str]]:
    """Headers of the upstream response that go back to the client."""
    listed = connection_listed(upstream_headers.get("Connection", ""))
    return [
        (name, value)
        for name, value in upstream_headers.items()
        if name.lower() not in NOT_RETURNED and name.lower() not in listed
    ]
