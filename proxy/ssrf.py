"""Where the gateway may send calls: http(s) only, an optional host allow-list, and never to
link-local or cloud metadata addresses unless explicitly allowed (GATEWAY_ALLOW_LINK_LOCAL)."""

import ipaddress
import logging
import socket
import time
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError

log = logging.getLogger("gateway.ssrf")

# 169.254.0.0/16 holds the cloud metadata service (169.254.169.254); fd00:ec2::254 is AWS's IPv6 one.
BLOCKED_NETWORKS = (
    ipaddress.ip_network("169.254.0.0/16"),
    ipaddress.ip_network("fe80::/10"),
    ipaddress.ip_network("fd00:ec2::254/128"),
)


def _addresses(host: str) -> list:
    try:
        return [ipaddress.ip_address(host.strip("[]"))]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except OSError:
        return []  # unresolvable now: the forwarder will answer 502 when it is called
    return [ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos]


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


def check_target_url(url: str) -> None:
    """ValidationError when the gateway must not call this URL."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ValidationError({"url": "Targets are http:// or https:// URLs."})
    host = parts.hostname or ""
    if not host:
        raise ValidationError({"url": "The URL has no host."})
    if not host_listed(host, settings.GATEWAY_UPSTREAM_HOSTS):
        raise ValidationError({"url": f"{host} is not in GATEWAY_UPSTREAM_HOSTS."})
    if settings.GATEWAY_ALLOW_LINK_LOCAL:
        return
    for address in _addresses(host):
        mapped = getattr(address, "ipv4_mapped", None) or address
        if any(mapped in network for network in BLOCKED_NETWORKS if network.version == mapped.version):
            raise ValidationError(
                {"url": f"{host} is a link-local or metadata address; set GATEWAY_ALLOW_LINK_LOCAL to allow it."}
            )


CHECK_TTL = 60.0  # seconds a verdict on a URL is trusted by this process
_verdicts: dict[tuple, tuple[bool, float]] = {}


def target_allowed(url: str) -> bool:
    """The same guard at call time, for targets saved without the admin's validation (shell,
    fixtures, settings changed since) and for names that now resolve elsewhere. Cached per URL
    for CHECK_TTL, so a call costs no DNS lookup."""
    memo = (url, tuple(settings.GATEWAY_UPSTREAM_HOSTS), settings.GATEWAY_ALLOW_LINK_LOCAL)
    now = time.monotonic()
    verdict = _verdicts.get(memo)
    if verdict is not None and now - verdict[1] < CHECK_TTL:
        return verdict[0]
    try:
        check_target_url(url)
        allowed = True
    except ValidationError as exc:
        log.error("refusing to call upstream %s: %s", url, "; ".join(exc.messages))
        allowed = False
    if len(_verdicts) > 10_000:
        _verdicts.clear()
    _verdicts[memo] = (allowed, now)
    return allowed
