"""Prometheus metrics, correct across gunicorn workers.

Under gunicorn every worker is a process of its own, so the counters live in prometheus_client's
multiprocess files (PROMETHEUS_MULTIPROC_DIR, set by gateway_project/gunicorn.conf.py) and
/metrics sums every worker's files, whichever worker answers the scrape. Without that variable
(tests, `manage.py runserver`) the process's own registry is served.

Per call: `started()` when the Call is made and `finished()` once when it ends (proxy/call.py);
both cost a few microseconds.
"""

import hmac
import logging
import os

from django.conf import settings
from django.http import HttpResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily

from routes_admin.models import ErrorType

from . import runtime
from .errors import error_response

log = logging.getLogger("gateway.metrics")

# Seconds; AI calls range from a few ms (embeddings, cached) to minutes (long streams).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)

CALLS = Counter("gateway_calls", "Calls through the proxy, by route and HTTP status.", ["route", "status"])
CALL_SECONDS = Histogram(
    "gateway_call_duration_seconds",
    "Time from the call's arrival to its end (the last byte of a stream), by route.",
    ["route"],
    buckets=LATENCY_BUCKETS,
)
UPSTREAM_SECONDS = Histogram(
    "gateway_upstream_duration_seconds",
    "Time until the upstream's response headers, by route and target.",
    ["route", "target"],
    buckets=LATENCY_BUCKETS,
)
TOKENS = Counter("gateway_tokens", "Tokens reported by upstreams, by route and kind.", ["route", "kind"])
# Only priced calls are counted, labelled by the upstream model: the admin's price list bounds the labels.
SPEND = Counter(
    "gateway_spend",
    "Cost of the calls in the gateway's currency (GATEWAY_CURRENCY), by route and model.",
    ["route", "model"],
)
IN_FLIGHT = Gauge("gateway_in_flight_calls", "Calls in progress (streams included).", multiprocess_mode="livesum")
QUOTA_REJECTIONS = Counter(
    "gateway_quota_rejections", "Calls refused with 429 by a quota, by route and limit.", ["route", "limit"]
)
LOG_QUEUE = Gauge(
    "gateway_log_queue_depth",
    "Request log rows waiting for the background writer (each worker's value at its last call).",
    multiprocess_mode="livesum",
)
LOG_ROWS_WRITTEN = Counter("gateway_log_rows_written", "Request log rows written to the database.")
LOG_WRITE_FAILURES = Counter(
    "gateway_log_write_failures", "Request log writes that left rows for later (the database was unavailable)."
)
LOG_ROWS_DROPPED = Counter(
    "gateway_log_rows_dropped",
    "Request log rows given up: queue_full (the database was away too long) or unstorable (refused for its values).",
    ["reason"],
)
LOG_WRITE_LAG = Histogram(
    "gateway_log_write_lag_seconds",
    "Per flush, how long its oldest row waited in memory before it was written (what a killed worker loses).",
    buckets=(0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10),
)
LOG_ROWS_SPOOLED = Counter(
    "gateway_log_rows_spooled",
    "Request log rows a stopping process kept on local disk (the database was away); replayed when it is back.",
)

BREAKER_STATES = ("closed", "open", "half-open", "probing")  # as proxy/breaker.py describes them


def add_collector(collector) -> None:
    """Serve a collector of a layer above the proxy (its collect() runs at each scrape)."""
    runtime.current().add_collector(collector)


def started() -> None:
    IN_FLIGHT.inc()


class _Children(dict):
    """A labelled metric's children by label values, kept: prometheus_client's labels() checks the
    values and takes a lock each time (~12 k instructions), for a child that never changes."""

    def __init__(self, metric):
        super().__init__()
        self.metric = metric

    def __missing__(self, labels: tuple):
        child = self[labels] = self.metric.labels(*labels)
        return child


_CALLS, _CALL_SECONDS, _UPSTREAM_SECONDS, _TOKENS, _SPEND, _QUOTA_REJECTIONS = map(
    _Children, (CALLS, CALL_SECONDS, UPSTREAM_SECONDS, TOKENS, SPEND, QUOTA_REJECTIONS)
)


def finished(call, latency_ms: float) -> None:
    """Account one ended call. Never raises: metrics must not fail a call."""
    try:
        route = call.route.name if call.route is not None else ""
        IN_FLIGHT.dec()
        _CALLS[route, str(call.status)].inc()
        _CALL_SECONDS[(route,)].observe(latency_ms / 1000)
        if call.upstream_ms is not None:
            _UPSTREAM_SECONDS[route, call.target].observe(call.upstream_ms / 1000)
        if call.usage:
            for kind in ("prompt", "completion"):
                count = call.usage.get(f"{kind}_tokens")
                if count:
                    _TOKENS[route, kind].inc(count)
        if call.cost:
            _SPEND[route, call.upstream_model or call.model].inc(float(call.cost))
        if call.status == 429 and call.limit:
            _QUOTA_REJECTIONS[route, call.limit].inc()
    except Exception:
        log.exception("could not account call %s in the metrics", getattr(call, "request_id", "?"))


def log_queue_depth(depth: int) -> None:
    LOG_QUEUE.set(depth)


def log_rows_written(count: int) -> None:
    LOG_ROWS_WRITTEN.inc(count)


def log_write_failed() -> None:
    LOG_WRITE_FAILURES.inc()


def log_rows_dropped(reason: str, count: int = 1) -> None:
    LOG_ROWS_DROPPED.labels(reason).inc(count)


def log_write_lag(seconds: float) -> None:
    LOG_WRITE_LAG.observe(seconds)


def log_rows_spooled(count: int) -> None:
    LOG_ROWS_SPOOLED.inc(count)


class BreakerCollector:
    """Breaker state per target, read from the shared cache when scraped (see proxy/breaker.py)."""

    def collect(self):
        gauge = GaugeMetricFamily(
            "gateway_breaker_state",
            "Circuit breaker per target: 1 for its current state (closed, open, half-open, probing).",
            labels=["route", "target", "state"],
        )
        for route, target, state in _breaker_states():
            for name in BREAKER_STATES:
                gauge.add_metric([route, target, name], 1.0 if state == name else 0.0)
        yield gauge


def _breaker_states():
    """(route name, target name, state) for every target of every enabled route: one cache read."""
    from . import breaker, config  # late import: config imports models

    try:
        routes = config.current().routes
        described = breaker.describe([target.id for route in routes for target in route.targets])
        return [
            (route.name, target.name, described.get(target.id, {}).get("state", "closed"))
            for route in routes
            for target in route.targets
        ]
    except Exception:  # the cache is away: no breaker series rather than a failed scrape
        log.warning("could not read breaker state for /metrics", exc_info=True)
        return []


def registry() -> CollectorRegistry:
    """What /metrics serves: every worker's files in multiprocess mode, else this process."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        scraped = CollectorRegistry()
        multiprocess.MultiProcessCollector(scraped)
    else:
        scraped = CollectorRegistry()
        scraped.register(_Default())
    scraped.register(BreakerCollector())
    for collector in runtime.current().collectors:
        scraped.register(collector)
    return scraped


class _Default:
    def collect(self):
        return REGISTRY.collect()


def render() -> tuple[bytes, str]:
    log_queue_depth(runtime.current().log_writer.pending())  # fresh for the worker answering the scrape
    return generate_latest(registry()), CONTENT_TYPE_LATEST


def metrics_view(request) -> HttpResponse:
    """GET /metrics. With GATEWAY_METRICS_TOKEN set, scrapers send `Authorization: Bearer <token>`."""
    token = settings.GATEWAY_METRICS_TOKEN
    if token:
        sent = request.META.get("HTTP_AUTHORIZATION", "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(sent.encode(), token.encode()):
            return error_response(
                401, ErrorType.INVALID_API_KEY, "The metrics token is missing or wrong.", request.request_id
            )
    body, content_type = render()
    return HttpResponse(body, content_type=content_type)
