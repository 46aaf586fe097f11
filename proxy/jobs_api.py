"""The proxy as the jobs app sees it: its one door, as proxy/state.py is the back office's.

The jobs app (a layer above) imports the proxy only through this module, so what it relies on
is listed here and a change inside the proxy that keeps these names leaves the jobs app alone.
`tests/gateway/test_layers.py` fails if a module of `jobs/` imports any other proxy module.
"""

from . import authentication, config, database, quotas, runtime, ssrf
from .attempts import CircuitOpen
from .errors import (
    GatewayError,
    InvalidAPIKey,
    InvalidRequest,
    RateLimited,
    UpstreamTimeout,
    UpstreamUnavailable,
    describe,
    error_response,
)
from .pinning import PinnedAdapter
from .pipeline import Incoming, finish, run_job

__all__ = [
    "CircuitOpen",
    "GatewayError",
    "Incoming",
    "InvalidAPIKey",
    "InvalidRequest",
    "PinnedAdapter",
    "RateLimited",
    "UpstreamTimeout",
    "UpstreamUnavailable",
    "answer_headers",
    "connect_database",
    "describe",
    "error_response",
    "finish",
    "host_key",
    "key_from_request",
    "register",
    "run_job",
    "start_runtime",
]


def register(runtime, submit, check, collector, send_alerts=None) -> None:
    """The jobs app's hooks, added to a process's runtime as it is built: how an admitted call
    becomes a job (`submit`, after `check` passed before admission), its /metrics collector, and
    how budget alerts recorded by the log writer are queued for delivery (`send_alerts`)."""
    runtime.set_job_submitter(submit, check)
    runtime.add_collector(collector)
    if send_alerts is not None:
        runtime.set_alert_sender(send_alerts)


def start_runtime() -> None:
    """Build this process's runtime (proxy/runtime.py) at a worker's start rather than at first use."""
    runtime.start()


def key_from_request(headers):
    """The usable API key these request headers carry (a GatewayError, 401 or 503, when none)."""
    return authentication.check_key(authentication.key_from_headers(headers), config.current())


def answer_headers(admission) -> list:
    """The quota headers (RateLimit-*) an admitted call answers with."""
    return quotas.answer_headers(admission)


def connect_database(timeout: float) -> None:
    """Connect with a short timeout: a database that is down is noticed in `timeout` seconds."""
    database.connect(timeout)


def host_key(host: str) -> str:
    """A host name as the SSRF guard compares it (no brackets, no final dot, lower case)."""
    return ssrf.host_key(host)
