"""Step 5: send the call to an upstream target and pass its answer back as it arrives.

One pooled `requests` session per process; an explicit timeout on every call; redirects are
returned, never followed; nothing of the body is preloaded. Every network failure becomes one
gateway error here: 502 when the upstream cannot be reached, 504 when it is too slow.
"""

import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import requests
from django.conf import settings
from requests.structures import CaseInsensitiveDict
from requests.utils import requote_uri
from urllib3.exceptions import ConnectTimeoutError
from urllib3.exceptions import HTTPError as Urllib3Error

from routes_admin.models import ErrorType

from . import runtime
from .errors import InvalidRequest, UpstreamTimeout, UpstreamUnavailable
from .headers import upstream_request_headers
from .pinning import PinnedAdapter
from .usage import UsageTracker

log = logging.getLogger("gateway.forwarding")
CHUNK_BYTES = 64 * 1024


class UpstreamClient:
    """This process's pooled HTTP client to the upstreams (in its runtime, proxy/runtime.py, which a
    forked child builds anew: no fork check here), made on first use."""

    def __init__(self):
        self._session: requests.Session | None = None

    def session(self) -> requests.Session:
        s = self._session
        if s is None:
            s = requests.Session()
            s.trust_env = False  # no proxies or .netrc credentials from the environment
            adapter = PinnedAdapter(pool_connections=64, pool_maxsize=settings.GATEWAY_POOL_SIZE, max_retries=0)
            s.mount("http://", adapter)
            s.mount("https://", adapter)
            self._session = s
        return s


def session() -> requests.Session:
    """This process's pooled HTTP client."""
    return runtime.current().upstream.session()


def prepared_request(method: str, url: str, headers: dict, body: bytes | None) -> requests.PreparedRequest:
    """The request exactly as the gateway means to send it.

    Session.request would merge the session's cookies, headers and hooks and re-quote the URL:
    nothing the gateway wants (cookies one upstream set must never reach another client's call),
    and ~0.15 ms of CPU per call. So the request is prepared here and handed to the session's
    pooled adapter, which never follows redirects and leaves their bodies to the client.
    """
    request = requests.PreparedRequest()
    request.method = method
    request.url = url if url.isascii() else requote_uri(url)
    request.headers = CaseInsensitiveDict(headers)
    request.body = body
    if body is not None:
        request.headers["Content-Length"] = str(len(body))
    elif method not in ("GET", "HEAD", "OPTIONS"):
        request.headers["Content-Length"] = "0"  # as requests does for a bodiless POST
    request.hooks = {"response": []}
    return request


@dataclass
class Outgoing:
    """The client's request, as the forwarder needs it."""

    method: str
    path: str  # the full public path, decoded
    raw_path: str  # as the client sent it (percent-encoded); "" when unknown
    query: str
    body: bytes
    document: object  # parsed JSON body, or None when not parsed
    headers: Mapping[str, str]  # the client's headers
    scheme: str
    host: str
    request_id: str
    client_ip: str
    forwarded_for: str = ""  # the X-Forwarded-For chain the gateway vouches for; "" = client_ip alone


# Characters a path keeps as they are (RFC 3986 pchar and "/").
PATH_SAFE = "/:@!$&'()*+,;=~"
PLAIN_PATH = re.compile(r"[A-Za-z0-9/_.~:@!$&'()*+,;=-]*")  # needs no escaping at all
LONE_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
UNSAFE_CHARACTER = re.compile(r"[\x00-\x1f\x7f\\]")
DOT_SEGMENT = re.compile(r"(?:^|/)\.\.?(?:;[^/]*)?(?:/|$)")  # ".", "..", and Tomcat's "..;x"


def _raw_path(outgoing: Outgoing) -> str:
    """The path as the client encoded it, when the server kept it (gunicorn's RAW_URI) and it
    agrees with the decoded one; else ""."""
    raw = outgoing.raw_path
    return raw if raw.startswith("/") and unquote(raw) == outgoing.path else ""


def _raw_rest(prefix: str, raw: str) -> str | None:
    """The raw path after the prefix's segments, or None when an escape (%2F) hides a segment
    boundary inside the prefix."""
    if raw.startswith(prefix) and raw[len(prefix) : len(prefix) + 1] in ("", "/"):
        return raw[len(prefix) :]  # the prefix written plainly: the usual case
    segments, wanted = raw.split("/"), prefix.split("/")
    if [unquote(segment) for segment in segments[: len(wanted)]] != wanted:
        return None
    return "/" + "/".join(segments[len(wanted) :]) if len(segments) > len(wanted) else ""


def check_path(prefix: str, outgoing: Outgoing) -> None:
    """InvalidRequest (400) for a path that could leave the target's base path or confuse the
    upstream about it: dot-segments in any decoded form (%2e%2e, %2F..%2F, %252e), also with
    ";params" (Tomcat's "..;"), backslashes, control characters (NUL included), and escapes
    inside the route's prefix (/v1%2F@other-host/...). Checked once per call, before any
    attempt."""
    raw = _raw_path(outgoing)
    forms = [raw, outgoing.path] if raw and raw != outgoing.path else [outgoing.path]
    while "%" in forms[-1] and len(forms) < 5:  # upstreams that decode again would see these
        decoded = unquote(forms[-1])
        if decoded == forms[-1]:
            break
        forms.append(decoded)
    for form in forms:
        if UNSAFE_CHARACTER.search(form):
            raise InvalidRequest("The path contains a control character or a backslash.")
        if DOT_SEGMENT.search(form):
            raise InvalidRequest("The path contains a dot-segment (. or ..).")
    if raw and _raw_rest(prefix, raw) is None:
        raise InvalidRequest("The route's prefix is written with escapes in this path (such as %2F).")


def path_rest(prefix: str, outgoing: Outgoing) -> str:
    """The path after the route's prefix, encoded as the client sent it: "" or "/...".

    WSGI decodes the path; the raw one (gunicorn's RAW_URI) alone tells %2F from /. Without it
    the decoded path is encoded again (else %3F would start a query, %23 a fragment).
    """
    raw = _raw_path(outgoing)
    rest = _raw_rest(prefix, raw) if raw else None
    if rest is None:
        rest = outgoing.path[len(prefix) :]
        return rest if PLAIN_PATH.fullmatch(rest) else quote(rest, safe=PATH_SAFE)
    if PLAIN_PATH.fullmatch(rest):
        return rest
    # The client's escapes stay; anything else that is not plain ASCII path text ("#", a space, a
    # lone "%") is escaped, so no parser can read the path as ending early.
    return quote(LONE_PERCENT.sub("%25", rest), safe=PATH_SAFE + "%")


@lru_cache(maxsize=4096)
def target_parts(url: str) -> tuple[str, str, str]:
    """Scheme, host[:port] (never a user or password) and base path of a target URL."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port:
        netloc += f":{parts.port}"
    return parts.scheme, netloc, parts.path.rstrip("/")


def upstream_url(route, target, outgoing: Outgoing) -> str:
    """The target's scheme, host, port and base path, then the rest of the client's path: built
    from parts, so no path can become a host, a user or a different base path."""
    scheme, netloc, base = target_parts(target.url)
    return urlunsplit((scheme, netloc, base + path_rest(route.prefix, outgoing), outgoing.query, ""))


def body_for(target, outgoing: Outgoing) -> bytes:
    """The body unchanged, or with the public model name replaced by the target's alias."""
    if not target.model_aliases:
        return outgoing.body
    document = outgoing.document
    if document is None and outgoing.body:
        try:
            document = outgoing.document = json.loads(outgoing.body)
        except (ValueError, UnicodeDecodeError):
            return outgoing.body
    if not isinstance(document, dict) or document.get("model") not in target.model_aliases:
        return outgoing.body
    return json.dumps({**document, "model": target.model_aliases[document["model"]]}).encode()


def send(route, target, outgoing: Outgoing) -> requests.Response:
    """One attempt at one target; the answer's body is not read yet."""
    headers = upstream_request_headers(
        outgoing.headers,
        target,
        request_id=outgoing.request_id,
        client_ip=outgoing.client_ip,
        forwarded_for=outgoing.forwarded_for,
        scheme=outgoing.scheme,
        host=outgoing.host,
    )
    try:
        url = upstream_url(route, target, outgoing)
        request = prepared_request(outgoing.method, url, headers, body_for(target, outgoing) or None)
        return (
            session()
            .get_adapter(url)
            .send(
                request,
                stream=True,
                timeout=(route.connect_timeout, route.read_timeout),
                verify=True,
                cert=None,
                proxies={},
            )
        )
    except requests.Timeout as exc:
        raise UpstreamTimeout(
            f"The upstream of the route {named(route, target)} did not answer within the route's timeout.",
            sent=not never_sent(exc),
        ) from None
    except (requests.RequestException, Urllib3Error, OSError) as exc:
        log.info("upstream %s unreachable: %s", target.name, failure_reason(exc))
        raise UpstreamUnavailable(
            f"The upstream of the route {named(route, target)} could not be reached.", sent=not never_sent(exc)
        ) from None
    except ValueError as exc:  # http.client refused a header (a control character): nothing was sent
        log.error("upstream %s not called: a request header cannot be sent (%s)", target.name, failure_reason(exc))
        raise UpstreamUnavailable(f"The upstream {target.name} could not be called.", sent=False) from None


def failure_reason(exc: BaseException) -> str:
    """What failed, safe for a log: the exception types down to the socket error, with the
    system's words for it ("Connection refused"). Never the messages: requests and urllib3 put
    the URL (the caller's path and query) in theirs, and http.client a refused header's value."""
    names, seen = [], set()
    while exc is not None and id(exc) not in seen and len(names) < 6:
        seen.add(id(exc))
        name = type(exc).__name__
        if isinstance(exc, OSError) and exc.strerror:
            name += f" ({exc.strerror})"
        names.append(name)
        reason = getattr(exc, "reason", None)
        cause = exc.args[0] if exc.args and isinstance(exc.args[0], BaseException) else None
        exc = next(
            (e for e in (reason, cause, exc.__cause__, exc.__context__) if isinstance(e, BaseException)),
            None,
        )
    return " < ".join(names)


def named(route, target) -> str:
    """What a caller may read about where the call went: the route's name, and the target's only
    when GATEWAY_EXPOSE_TARGET says so (a default target name is the upstream's host:port, an
    internal address). Operators see the target in the log row and the console."""
    return f"{route.name} (target {target.name})" if settings.GATEWAY_EXPOSE_TARGET else route.name


def never_sent(exc: BaseException) -> bool:
    """True when the connection itself failed (refused, unresolvable, connect timeout): the
    upstream never saw the request, so any method may be retried elsewhere (see attempts.py)."""
    seen = 0
    while exc is not None and seen < 5:
        if isinstance(exc, (requests.ConnectTimeout, ConnectTimeoutError)):  # NewConnectionError is one
            return True
        cause = exc.args[0] if exc.args and isinstance(exc.args[0], BaseException) else None
        exc = getattr(exc, "reason", None) or cause  # requests wraps urllib3, which wraps the socket error
        seen += 1
    return False


class UpstreamBody:
    """The upstream's answer, passed to the client chunk by chunk; usage is read on the way.

    close() runs at the end of the body and when the client goes away (pipeline.Answer).
    """

    def __init__(self, call, upstream: requests.Response):
        self.call = call
        self.upstream = upstream
        self.tracker = UsageTracker(
            upstream.headers.get("Content-Type", ""), upstream.headers.get("Content-Encoding", "")
        )
        self.complete = False

    def _raw_chunks(self):
        raw = self.upstream.raw
        if raw.chunked and raw.supports_chunked_reads():
            yield from raw.read_chunked(CHUNK_BYTES, decode_content=False)
        else:
            while True:
                data = raw.read1(CHUNK_BYTES, decode_content=False)
                if not data:
                    break
                yield data

    def __iter__(self):
        call, tracker = self.call, self.tracker
        try:
            for chunk in self._raw_chunks():
                if chunk:
                    call.bytes_out += len(chunk)
                    tracker.feed(chunk)
                    yield chunk
            self.complete = True
        except (Urllib3Error, requests.RequestException, OSError) as exc:
            # Bytes already reached the client: too late to retry or change the status.
            reason = failure_reason(exc)
            log.warning("upstream %s broke off mid-answer (request id %s): %s", call.target, call.request_id, reason)
            call.error_type = ErrorType.UPSTREAM_STREAM_ERROR
            if tracker.sse:
                event = {
                    "error": {
                        "type": ErrorType.UPSTREAM_STREAM_ERROR,
                        "message": "The upstream stopped mid-stream.",
                        "request_id": call.request_id,
                    }
                }
                yield b"event: error\ndata: " + json.dumps(event).encode() + b"\n\n"

    def close(self) -> None:
        call = self.call
        try:
            if self.complete:
                self.upstream.raw.release_conn()  # back to the pool for the next call
            else:
                self.upstream.close()  # unread answer: the connection cannot be reused
                if not call.error_type:
                    call.error_type = ErrorType.CLIENT_DISCONNECTED
        finally:
            call.usage = self.tracker.finish() or call.usage
            if call.usage is None and not self.complete and call.counts_tokens and call.status < 400:
                # Cut before the usage arrived: the tokens were spent all the same.
                call.usage = self.tracker.estimate(call.bytes_in, call.bytes_out)
                call.usage_estimated = True
