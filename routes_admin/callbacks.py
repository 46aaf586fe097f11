"""Where a webhook may go: the X-Callback-URL read once, strictly, and rebuilt from its parts.

Parsers disagree on URLs outside the plain form of RFC 3986. `http://127.0.0.1:19104\\@hooks.example.com/`
is hooks.example.com to urllib.parse and 127.0.0.1:19104 to urllib3, which ends the host at the
backslash; urllib.parse silently drops tabs and newlines that urllib3 refuses; `127.1`, `0x7f.1`
and `2130706433` are 127.0.0.1 to the resolver but names to an allow-list. So a callback is
accepted only in one plain form that every parser reads alike, and anything else is refused:

    http[s]://host[:port][/path][?query]

- host: a DNS name in ASCII (letters, digits, hyphens; an IDN in its xn-- form; no trailing dot;
  its last label not all digits), an IPv4 address in dotted-quad decimal, or a bracketed IPv6
  address without a zone id;
- port: 1-65535 in decimal, no sign, no leading zero;
- path and query: RFC 3986 characters, `%` only in `%XX` escapes, no `.` or `..` segment, no
  leading `//`;
- no user or password, no fragment, no whitespace, control character, backslash or non-ASCII
  character anywhere; at most MAX_LENGTH characters (what a job stores).

(host, port) must be on GATEWAY_WEBHOOK_HOSTS: a `host` entry allows the scheme's default port
only (80 or 443), `host:port` that port. What is sent is `Callback.url`, rebuilt from the checked
parts (escapes normalised so that no client library rewrites it), and the connection goes only
to the addresses `addresses()` checked (jobs/webhooks.py, through proxy/pinning.py).
"""

import ipaddress
import re
import socket
from dataclasses import dataclass

from django.conf import settings
from django.core.exceptions import ValidationError

from routes_admin import validators

MAX_LENGTH = 2000  # Job.callback_url
DEFAULT_PORTS = {"http": 80, "https": 443}

_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
DNS_NAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_PCHAR = r"(?:[A-Za-z0-9\-._~!$&'()*+,;=:@]|%[0-9A-Fa-f]{2})"
URL = re.compile(
    rf"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?P<authority>[^/?]*)"
    rf"(?P<path>(?:/{_PCHAR}*)*)(?:\?(?P<query>(?:{_PCHAR}|[/?])*))?"
)
AUTHORITY = re.compile(r"(?P<host>\[[0-9a-f:.]+\]|[a-z0-9.-]+)(?::(?P<port>[1-9][0-9]{0,4}))?")
ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}")
UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


class Refused(ValueError):
    """The URL may not receive webhooks; the message says why (safe to show the caller)."""


@dataclass(frozen=True)
class Callback:
    scheme: str
    host: str  # lower case; an IPv6 address in brackets, compressed
    port: int
    target: str  # path and query, as sent in the request line

    @property
    def url(self) -> str:
        """The URL rebuilt from the checked parts: what is stored, sent and signed."""
        port = "" if self.port == DEFAULT_PORTS[self.scheme] else f":{self.port}"
        return f"{self.scheme}://{self.host}{port}{self.target}"

    @property
    def host_and_port(self) -> str:
        return f"{self.host}:{self.port}"


def parse(url: str) -> Callback:
    """The callback URL's checked parts; Refused when it is not in the plain form or not allowed."""
    callback = read(url)
    if not is_allowed(callback):
        raise Refused(
            f"X-Callback-URL: {callback.host_and_port} is not on this gateway's webhook allow-list "
            "(GATEWAY_WEBHOOK_HOSTS)."
        )
    return callback


def read(url: str) -> Callback:
    """The URL's parts when it is in the plain form above (allowed or not); else Refused."""
    if len(url) > MAX_LENGTH:
        raise Refused(f"X-Callback-URL is longer than {MAX_LENGTH} characters.")
    if any(not "\x21" <= c <= "\x7e" for c in url):
        raise Refused(
            "X-Callback-URL may hold printable ASCII only: no spaces, control or non-ASCII characters "
            "(write an international domain name in its xn-- form)."
        )
    if "\\" in url:
        raise Refused("X-Callback-URL must not contain a backslash.")
    if "#" in url:
        raise Refused("X-Callback-URL must not have a fragment (#...): it never reaches the receiver.")
    match = URL.fullmatch(url)
    if match is None or match["scheme"].lower() not in DEFAULT_PORTS:
        raise Refused(
            "X-Callback-URL must be an absolute http:// or https:// URL whose path and query hold only "
            "RFC 3986 characters (others %-escaped)."
        )
    scheme = match["scheme"].lower()
    authority = match["authority"].lower()
    if "@" in authority:
        raise Refused("X-Callback-URL must not contain a user name or password.")
    parts = AUTHORITY.fullmatch(authority)
    host = canonical_host(parts["host"]) if parts else None
    if host is None:
        raise Refused(
            "X-Callback-URL: the host must be a DNS name, an IPv4 address in dotted-quad form or a "
            "bracketed IPv6 address (no zone id), with an optional decimal port."
        )
    port = int(parts["port"]) if parts["port"] else DEFAULT_PORTS[scheme]
    if not 1 <= port <= 65535:
        raise Refused("X-Callback-URL: the port must be between 1 and 65535.")
    path = normalise_escapes(match["path"]) or "/"
    if path.startswith("//"):  # a request target some servers read as //host/...
        raise Refused("X-Callback-URL: the path must not start with //.")
    if any(unescape(segment) in (".", "..") for segment in path.split("/")):
        raise Refused("X-Callback-URL: the path must not hold . or .. segments.")
    target = path if not match["query"] else f"{path}?{normalise_escapes(match['query'])}"
    return Callback(scheme=scheme, host=host, port=port, target=target)


def canonical_host(host: str) -> str | None:
    """The host in its one accepted spelling (lower case), or None when it has none."""
    if host.startswith("["):
        try:
            return f"[{ipaddress.IPv6Address(host[1:-1]).compressed}]"
        except ValueError:
            return None
    try:
        address = ipaddress.IPv4Address(host)
        return host if str(address) == host else None
    except ValueError:
        pass
    if len(host) > 253 or not DNS_NAME.fullmatch(host) or host.rsplit(".", 1)[-1].isdigit():
        return None
    try:
        socket.inet_aton(host)  # 0x7f.1, 0177.0.0.1, 2130706433: the resolver's other IPv4 spellings
        return None
    except OSError:
        return host


def normalise_escapes(text: str) -> str:
    """RFC 3986 6.2.2: escapes of unreserved characters decoded, the others in upper case; what
    requests and urllib3 would do to the URL anyway, so the URL signed is the URL sent."""

    def one(match: re.Match) -> str:
        char = chr(int(match[0][1:], 16))
        return char if char in UNRESERVED else match[0].upper()

    return ESCAPE.sub(one, text)


def unescape(segment: str) -> str:
    return ESCAPE.sub(lambda match: chr(int(match[0][1:], 16)), segment)


def allowed() -> frozenset[tuple[str, int | None]]:
    """GATEWAY_WEBHOOK_HOSTS as (host, port) pairs; port None (a bare host) stands for the scheme's
    default port. An entry in another form matches nothing."""
    pairs = set()
    for entry in settings.GATEWAY_WEBHOOK_HOSTS:
        parts = AUTHORITY.fullmatch(entry.strip().lower())
        host = canonical_host(parts["host"]) if parts else None
        if host is not None:
            pairs.add((host, int(parts["port"]) if parts["port"] else None))
    return frozenset(pairs)


def is_allowed(callback: Callback) -> bool:
    pairs = allowed()
    default = callback.port == DEFAULT_PORTS[callback.scheme]
    return (callback.host, callback.port) in pairs or (default and (callback.host, None) in pairs)


def addresses(callback: Callback) -> list[str]:
    """The addresses a delivery may connect to, resolved and checked now.

    Refused when the host resolves to a link-local or metadata address (the SSRF rule of
    targets, routes_admin/validators.py, GATEWAY_ALLOW_LINK_LOCAL included); OSError when it
    resolves to nothing (a delivery to try again later)."""
    found = validators.resolve(callback.host)
    if not settings.GATEWAY_ALLOW_LINK_LOCAL and validators.reaches_metadata(callback.host, found):
        raise Refused(f"{callback.host} is a link-local or metadata address.")
    if not found:
        raise OSError(f"{callback.host} does not resolve")
    return [str(address) for address in found]


def check_alert_webhook(value) -> None:
    """Model field validator of a key's, team's or route's own budget alert webhook: the same rules
    and allow-list as a job's X-Callback-URL, checked when it is saved (and again before each
    delivery, as the allow-list may change)."""
    if value:
        try:
            parse(str(value))
        except Refused as exc:
            raise ValidationError(str(exc).replace("X-Callback-URL", "The alert webhook")) from None
