"""What the gateway knows about one call while it runs: plain data that the pipeline fills.

proxy/pipeline.py writes it step by step and hands it, when the call ends, to the recorder
(its RequestLog row) and the metrics.
"""

import time
from dataclasses import dataclass, field

from django.utils import timezone


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
    admission: object = None  # quotas.Admission: released when the call ends
    model: str = ""  # the model the client asked for (the JSON body's "model")
    upstream_model: str = ""  # the model sent upstream, after the answering target's alias
    status: int = 0
    target: str = ""
    targets_tried: list = field(default_factory=list)
    attempts: int = 0
    fallback_from: str = ""
    held_target: object = None  # the TargetInfo whose answer streams: in flight until the call ends
    streamed: bool = False
    upstream_ms: float | None = None
    bytes_out: int = 0
    usage: dict | None = None  # prompt_tokens, completion_tokens, total_tokens
    usage_estimated: bool = False  # cut before the upstream reported its usage (proxy/usage.py)
    counts_tokens: bool = False  # an AI call (its body names a model): a cut answer gets an estimate
    error_type: str = ""
    limit: str = ""
    finished: bool = False
    # Why the call went as it did, for its log row: "match", "attempts", "why", "auth", "quota".
    detail: dict = field(default_factory=dict)
    job_id: str = ""  # a queued job's run (jobs/): its log row says so, with its wait in the queue
    queue_ms: float | None = None
    # Cache values read ahead with the token counters (breaker states), so forwarding needs no
    # round trip of its own: cache key -> value (None when absent). See pipeline.admit.
    read_ahead: dict | None = None
    prices: object = None  # the snapshot's routes_admin.pricing.PriceList, read when the call ends
    cost: object = None  # Decimal in GATEWAY_CURRENCY (proxy/costs.py); None: no price
    budget_hold: object = None  # proxy/budgets.Hold: what admission reserved, settled when the call ends

    @property
    def latency_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000

    def fail(self, status: int, error_type: str, limit: str = "") -> None:
        self.status, self.error_type = status, error_type
        if limit:
            self.limit = limit
