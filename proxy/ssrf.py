"""Where the gateway may send calls: http(s) only, an optional host allow-list, and never to
link-local or cloud metadata addresses unless explicitly allowed (GATEWAY_ALLOW_LINK_LOCAL)."""

import ipaddress
import socket
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError

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


def check_target_url(url: str) -> None:
    """ValidationError when the gateway must not call this URL."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ValidationError({"url": "Targets are http:// or https:// URLs."})
    host = parts.hostname or ""
    if not host:
        raise ValidationError({"url": "The URL has no host."})
    allowed = settings.GATEWAY_UPSTREAM_HOSTS
    if allowed and host not in allowed:
        raise ValidationError({"url": f"{host} is not in GATEWAY_UPSTREAM_HOSTS."})
    if settings.GATEWAY_ALLOW_LINK_LOCAL:
        return
    for address in _addresses(host):
        mapped = getattr(address, "ipv4_mapped", None) or address
        if any(mapped in network for network in BLOCKED_NETWORKS if network.version == mapped.version):
            raise ValidationError({"url": f"{host} is a link-local or metadata address; set GATEWAY_ALLOW_LINK_LOCAL to allow it."})
