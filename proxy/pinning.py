"""Connections made to the addresses the SSRF guard checked, never to a fresh DNS answer.

urllib3 resolves a host again for each new connection, so a name that answered a safe address
for the guard's check could answer a metadata address for the connection (DNS rebinding). These
pool classes connect to ssrf.pinned_addresses(host) instead, while the Host header, TLS SNI and
certificate verification keep using the name. Pooled connections are reused as before; only a
new connection looks up its pinned addresses (a dict read).

The forwarder's adapter asks proxy/ssrf.py; another caller (webhook deliveries) passes its own
`addresses_for(host)`, which names the checked addresses or raises OSError to refuse the host.
"""

import select
import socket
from collections.abc import Callable

from requests import PreparedRequest, Response
from requests.adapters import HTTPAdapter
from requests.structures import CaseInsensitiveDict
from requests.utils import get_encoding_from_headers
from urllib3 import connection, connectionpool
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError
from urllib3.util.connection import create_connection

from . import ssrf

try:  # the system's poll, not gevent's: see PinnedConnectionMixin.is_connected
    from gevent.monkey import get_original

    _poll = get_original("select", "poll")
except ImportError:  # pragma: no cover (gevent is a dependency; a process may run without it)
    _poll = select.poll


class PinnedConnectionMixin:
    @property
    def is_connected(self) -> bool:
        """Whether a pooled connection is still open (not closed or answered by the upstream):
        urllib3 asks before each reuse with a zero-timeout poll, which under gevent's patched
        select is a trip through the event loop (~4 % of a call's CPU at 32 concurrent calls).
        The system's poll with timeout 0 answers the same without blocking or yielding."""
        if self.sock is None:
            return False
        poller = _poll()
        poller.register(self.sock.fileno(), select.POLLIN)
        return not poller.poll(0)

    def addresses_for(self, host: str) -> list[str]:
        """The addresses to connect to for `host` ([]: resolve as usual); OSError refuses it."""
        return ssrf.pinned_addresses(host)

    def _new_conn(self) -> socket.socket:
        try:
            addresses = self.addresses_for(self.host)
        except OSError as exc:
            raise NewConnectionError(self, str(exc)) from None
        if not addresses:
            return super()._new_conn()
        error = None
        for address in addresses:  # in the resolver's order, as urllib3 would try them
            try:
                return create_connection(
                    (address, self.port),
                    self.timeout,
                    source_address=self.source_address,
                    socket_options=self.socket_options,
                )
            except TimeoutError as exc:
                raise ConnectTimeoutError(
                    self, f"Connection to {self.host} timed out. (connect timeout={self.timeout})"
                ) from exc
            except OSError as exc:
                error = exc
        raise NewConnectionError(self, f"Failed to establish a new connection: {error}") from error


class PinnedHTTPConnection(PinnedConnectionMixin, connection.HTTPConnection):
    pass


class PinnedHTTPSConnection(PinnedConnectionMixin, connection.HTTPSConnection):
    pass


class PinnedHTTPConnectionPool(connectionpool.HTTPConnectionPool):
    ConnectionCls = PinnedHTTPConnection


class PinnedHTTPSConnectionPool(connectionpool.HTTPSConnectionPool):
    ConnectionCls = PinnedHTTPSConnection


class PinnedAdapter(HTTPAdapter):
    """requests' pooled adapter, with connections pinned to the checked addresses.

    `addresses_for(host)`, when given, replaces the SSRF guard's pins for this adapter's
    connections (see PinnedConnectionMixin.addresses_for)."""

    def __init__(self, *args, addresses_for: Callable[[str], list[str]] | None = None, **kwargs):
        self.addresses_for = addresses_for  # before HTTPAdapter.__init__, which makes the pools
        super().__init__(*args, **kwargs)

    def init_poolmanager(self, *args, **kwargs) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = pool_classes(self.addresses_for)
        self._origins: dict[str, tuple] = {}  # "scheme://host:port" -> (pool key, pool context)

    def get_connection_with_tls_context(self, request, verify, proxies=None, cert=None):
        """The origin's pool, as requests finds it, with the pool's key worked out once per origin.

        requests parses the URL twice and builds the pool manager's key (a 20-field tuple) on
        every call: ~13 us, for an answer that only changes with the origin. The pool itself is
        still asked of the pool manager each time, so a pool it dropped (more origins than
        pool_connections) is made anew, never reused closed. Calls with proxies, a CA bundle or a
        client certificate (none of the gateway's) take requests' own path."""
        if proxies or verify is not True or cert is not None:
            return super().get_connection_with_tls_context(request, verify, proxies, cert)
        url = request.url
        end = url.find("/", url.find("//") + 2)
        origin = url if end < 0 else url[:end]
        found = self._origins.get(origin)
        if found is None:
            host_params, pool_kwargs = self.build_connection_pool_key_attributes(request, verify, cert)
            context = {**self.poolmanager.connection_pool_kw, **pool_kwargs, **host_params}
            context["port"] = context["port"] or connectionpool.port_by_scheme.get(context["scheme"], 80)
            if len(self._origins) >= 1024:  # origins of targets since removed
                self._origins.clear()
            found = self._origins[origin] = (self.poolmanager.key_fn_by_scheme[context["scheme"]](context), context)
        key, context = found
        return self.poolmanager.connection_from_pool_key(key, request_context=dict(context))  # it pops from its copy

    def request_url(self, request, proxies) -> str:
        """The path and query to send (requests' answer without proxies, parsing the URL once, not three times)."""
        if proxies:
            return super().request_url(request, proxies)
        url = request.path_url
        return f"/{url.lstrip('/')}" if url.startswith("//") else url

    def build_response(self, req: PreparedRequest, resp) -> Response:
        """requests' Response, without the upstream's cookies read into a cookie jar: the gateway
        passes Set-Cookie on to its client as a header and keeps no cookie (requests' own
        build_response parses them for every answer: ~20 % of what it costs)."""
        response = Response()
        response.status_code = getattr(resp, "status", None)
        response.headers = CaseInsensitiveDict(getattr(resp, "headers", {}))
        response.encoding = get_encoding_from_headers(response.headers)
        response.raw = resp
        response.reason = resp.reason
        response.url = req.url.decode("utf-8") if isinstance(req.url, bytes) else req.url
        response.request = req
        response.connection = self
        return response


def pool_classes(addresses_for: Callable[[str], list[str]] | None) -> dict:
    if addresses_for is None:
        return {"http": PinnedHTTPConnectionPool, "https": PinnedHTTPSConnectionPool}
    lookup = {"addresses_for": lambda self, host: addresses_for(host)}
    http = type("PinnedHTTPConnection", (PinnedHTTPConnection,), lookup)
    https = type("PinnedHTTPSConnection", (PinnedHTTPSConnection,), lookup)
    return {
        "http": type("PinnedHTTPConnectionPool", (PinnedHTTPConnectionPool,), {"ConnectionCls": http}),
        "https": type("PinnedHTTPSConnectionPool", (PinnedHTTPSConnectionPool,), {"ConnectionCls": https}),
    }
