"""What the gateway knows about one call while it runs; becomes its RequestLog row at the end."""

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from django.utils import timezone

from . import metrics, recording

log = logging.getLogger("gateway.call")


@dataclass
class Call:
    request_id: str
    method: str
    path: str
    client_ip: str
    bytes_in: int = 0
    started: float = field(default_factory=time.perf_counter)
    created: object = field(default_factory=timezone.now)
    key: object = None  # config.KeyInfo
    route: object = None  # config.RouteInfo
    status: int = 0
    target: str = ""
    targets_tried: list = field(default_factory=list)
    attempts: int = 0
    fallback_from: str = ""
    streamed: bool = False
    upstream_ms: float | None = None
    bytes_out: int = 0
    usage: dict | None = None  # prompt_tokens, completion_tokens, total_tokens
    usage_estimated: bool = False  # cut before the upstream reported its usage (proxy/usage.py)
    counts_tokens: bool = False  # an AI call (its body names a model): a cut answer gets an estimate
    error_type: str = ""
    limit: str = ""
    finished: bool = False
    # Cache values read ahead with the token counters (breaker states), so step 5 needs no round
    # trip of its own: cache key -> value (None when absent). See quotas.admit.
    read_ahead: dict | None = None
    # Run once when the call ends, whatever the outcome (quota slots, token counters, metrics).
    on_finish: list[Callable[["Call"], None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        metrics.started()

    @property
    def latency_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000

    def fail(self, status: int, error_type: str, limit: str = "") -> None:
        self.status, self.error_type = status, error_type
        if limit:
            self.limit = limit

    def finish(self) -> None:
        """End the call once: release what it holds and record it. Never raises."""
        if self.finished:
            return
        self.finished = True
        latency_ms = self.latency_ms
        for callback in self.on_finish:
            try:
                callback(self)
            except Exception:
                log.exception("finishing call %s failed in %r", self.request_id, callback)
        metrics.finished(self, latency_ms)
        recording.record(self, latency_ms)
