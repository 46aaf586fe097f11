"""The SSRF guard at call time, and the addresses the forwarder may connect to.

The check itself is routes_admin/validators.py (the admin validates targets with it too). Here it
runs again when a target is called, for targets saved without the admin's validation (shell,
fixtures, settings changed since) and for names that now resolve elsewhere. The addresses it
checked are the ones the forwarder connects to (forwarding.PinnedConnection): a name that
resolves to a safe address for the check and to a metadata address a moment later (DNS
rebinding) is never called at the second one.
"""

import logging
import time
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError

from routes_admin.validators import check_target_url, host_and_port

from . import runtime

log = logging.getLogger("gateway.ssrf")

CHECK_TTL = 60.0  # seconds a verdict on a URL (and the addresses it checked) is trusted


class Guard:
    """This process's verdicts and checked addresses (in its runtime, proxy/runtime.py)."""

    def __init__(self):
        self.verdicts: dict[tuple, tuple[bool, float]] = {}  # (url, settings) -> (allowed, when)
        self.pins: dict[str, tuple[list, float]] = {}  # host -> (checked addresses, when)


def target_allowed(url: str) -> bool:
    """True when the gateway may call this URL. Cached per URL for CHECK_TTL, so a call costs no
    DNS lookup; the addresses checked are kept for the connection (see pinned_addresses)."""
    memo = (url, tuple(settings.GATEWAY_UPSTREAM_HOSTS), settings.GATEWAY_ALLOW_LINK_LOCAL)
    now = time.monotonic()
    guard = runtime.current().ssrf
    verdict = guard.verdicts.get(memo)
    if verdict is not None and now - verdict[1] < CHECK_TTL:
        return verdict[0]
    try:
        addresses = check_target_url(url)
        allowed = True
    except ValidationError as exc:
        # host[:port] only: the URL may carry a password (that is one reason to refuse it).
        log.error("refusing to call upstream %s: %s", host_and_port(url), "; ".join(exc.messages))
        addresses, allowed = [], False
    if len(guard.verdicts) > 10_000:
        guard.verdicts.clear()
        guard.pins.clear()
    guard.verdicts[memo] = (allowed, now)
    if addresses:
        guard.pins[host_key(urlsplit(url).hostname or "")] = ([str(a) for a in addresses], now)
    return allowed


def host_key(host: str) -> str:
    return host.strip("[]").rstrip(".").lower()


def pinned_addresses(host: str) -> list[str]:
    """The addresses the guard checked for `host`, to connect to instead of resolving it again.

    Checked again now when there is no fresh verdict (a connection made outside a call's
    target check); raises OSError when the host must not be called.
    """
    key = host_key(host)
    pins = runtime.current().ssrf.pins
    pinned = pins.get(key)
    if pinned is not None and time.monotonic() - pinned[1] < CHECK_TTL:
        return pinned[0]
    scheme_less = f"http://{'[' + key + ']' if ':' in key else key}/"
    try:
        addresses = check_target_url(scheme_less)
    except ValidationError as exc:
        raise OSError(f"refusing to connect to {key}: {'; '.join(exc.messages)}") from None
    if not addresses:
        return []  # not checked (link-local allowed, or unresolvable): connect as usual
    pins[key] = ([str(a) for a in addresses], time.monotonic())
    return pins[key][0]
