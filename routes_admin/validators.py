"""Where the gateway may send calls: http(s) only, no credentials in the URL, an optional host
allow-list, and never to link-local or cloud metadata addresses unless explicitly allowed
(GATEWAY_ALLOW_LINK_LOCAL).

It sits beside the models (which validate targets with it) and below the proxy (which checks
again at call time, and connects only to the addresses checked here: proxy/ssrf.py)."""

import ipaddress
import re
import socket
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError

# The cloud metadata and host services a target must never reach. 169.254.0.0/16 holds the
# metadata service of AWS, GCP (metadata.google.internal), Azure, DigitalOcean, OpenStack,
# Oracle and Tencent (169.254.0.23), and ECS task credentials (169.254.170.2).
BLOCKED_NETWORKS = (
    ipaddress.ip_network("169.254.0.0/16"),
    ipaddress.ip_network("100.100.100.200/32"),  # Alibaba Cloud metadata
    ipaddress.ip_network("192.0.0.192/32"),  # Oracle Cloud metadata
    ipaddress.ip_network("168.63.129.16/32"),  # Azure wire server (host agent, DNS)
    ipaddress.ip_network("fe80::/10"),
    ipaddress.ip_network("fd00:ec2::254/128"),  # AWS metadata over IPv6
    ipaddress.ip_network("fd20:ce::254/128"),  # GCP metadata over IPv6
)
# Names of metadata services, refused even where they do not resolve now (a later deployment
# in that cloud would make them resolve).
BLOCKED_NAMES = frozenset({"metadata.google.internal", "metadata.goog", "metadata", "metadata.tencentyun.com"})

# IPv6 forms that carry an IPv4 address a host may route to: NAT64 (RFC 6052 well-known and
# local-use prefixes) and IPv4-compatible (::a.b.c.d, deprecated but still parsed).
NAT64_WELL_KNOWN = ipaddress.ip_network("64:ff9b::/96")
NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")
IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
# RFC 6052 §2.2: the byte where the IPv4 address starts for each NAT64 prefix length that fits
# in the local-use /48; byte 8 (bits 64-71) is always zero and skipped.
NAT64_STARTS = (6, 7, 9, 12)  # prefixes of 48, 56, 64 and 96 bits


def embedded_ipv4(address: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """Every IPv4 address an IPv6 address may stand for (mapped, compatible, 6to4, Teredo, NAT64)."""
    found = []
    if address.ipv4_mapped:
        found.append(address.ipv4_mapped)
    if address.sixtofour:
        found.append(address.sixtofour)
    if address.teredo:
        found.extend(address.teredo)
    packed = address.packed
    if address in IPV4_COMPATIBLE and int(address) > 1:
        found.append(ipaddress.IPv4Address(packed[12:]))
    if address in NAT64_WELL_KNOWN:
        found.append(ipaddress.IPv4Address(packed[12:]))
    if address in NAT64_LOCAL:
        # The local-use prefix may be of any RFC 6052 length: every position is checked.
        for start in NAT64_STARTS:
            positions = [i for i in range(start, start + 5) if i != 8][:4]
            found.append(ipaddress.IPv4Address(bytes(packed[i] for i in positions)))
    return found


def is_blocked(address) -> bool:
    """True for metadata and link-local addresses, in any IPv4 or IPv6 spelling of them."""
    candidates = [address]
    if address.version == 6:
        candidates += embedded_ipv4(address)
    return any(a in network for a in candidates for network in BLOCKED_NETWORKS if network.version == a.version)


def resolve(host: str) -> list:
    """The addresses a connection to `host` may use (an IP literal is its own address)."""
    try:
        return [ipaddress.ip_address(host.strip("[]").split("%")[0])]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return []  # unresolvable now: the forwarder will answer 502 when it is called
    return list(dict.fromkeys(ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos))


def host_listed(host: str, allowed) -> bool:
    """An empty list allows every host; ".example.com" allows example.com and its subdomains."""
    if not allowed:
        return True
    host = host.lower().rstrip(".")
    for entry in allowed:
        entry = entry.strip().lower().rstrip(".")
        if host == entry or (entry.startswith(".") and (host == entry[1:] or host.endswith(entry))):
            return True
    return False


def check_target_url(url: str) -> list:
    """The addresses the gateway may connect to for this URL; ValidationError when it must not
    call it at all. An empty list means "not checked" (unresolvable, or link-local allowed)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ValidationError({"url": "Targets are http:// or https:// URLs."})
    if "@" in parts.netloc:
        # A password here would show wherever the URL or a name made from it does (errors,
        # metrics, logs, the admin): the credential header is the one place for it.
        raise ValidationError(
            {"url": "Put no user or password in the URL: use the credential header (e.g. Authorization: Basic ...)."}
        )
    host = parts.hostname or ""
    if not host:
        raise ValidationError({"url": "The URL has no host."})
    try:
        parts.port  # noqa: B018  (raises on a port that is not a number)
    except ValueError:
        raise ValidationError({"url": "The URL's port is not a number."}) from None
    if not host_listed(host, settings.GATEWAY_UPSTREAM_HOSTS):
        raise ValidationError({"url": f"{host} is not in GATEWAY_UPSTREAM_HOSTS."})
    if settings.GATEWAY_ALLOW_LINK_LOCAL:
        return []
    addresses = [] if host.rstrip(".").lower() in BLOCKED_NAMES else resolve(host)
    if reaches_metadata(host, addresses):
        raise ValidationError(
            {"url": f"{host} is a link-local or metadata address; set GATEWAY_ALLOW_LINK_LOCAL to allow it."}
        )
    return addresses


def reaches_metadata(host: str, addresses) -> bool:
    """True when `host` names a metadata service or any of its addresses is link-local or
    metadata (the rule for targets and webhook receivers alike)."""
    return host.rstrip(".").lower() in BLOCKED_NAMES or any(is_blocked(address) for address in addresses)


def host_and_port(url: str) -> str:
    """host[:port] of a URL, never its user or password (a name safe to show)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    return f"{host}:{port}" if port else host


def default_target_name(url: str) -> str:
    """The name a target gets when none is given: host[:port] of its URL, never its user or password."""
    return host_and_port(url) or "target"


def origin(url: str) -> tuple[str, str, int | None]:
    """Scheme, host and port (the default one when the URL names none): where a credential goes."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").rstrip("."), port or {"http": 80, "https": 443}.get(scheme)


# RFC 9110 §5.1: a field name is a token. A value holds no control character but horizontal tab
# (§5.5) and, as the HTTP client requires, starts with none of white space: a CR, LF or NUL in a
# stored credential would make every call fail inside the client, with the value in its error.
HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
BAD_HEADER_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]|^\s")


def check_credential(header: str, value: str) -> None:
    """ValidationError for a credential header the gateway could not send; never quotes the value."""
    errors = {}
    if header and not HEADER_NAME.fullmatch(header):
        errors["credential_header"] = "A header name is letters, digits and !#$%&'*+-.^_`|~ only."
    if value and BAD_HEADER_VALUE.search(value):
        errors["credential_value"] = (
            "The credential contains a line break, NUL or another control character, or starts with a space: "
            "no HTTP client may send it."
        )
    if errors:
        raise ValidationError(errors)
