"""What one process holds in memory between calls: the parts of its runtime, put together.

proxy/runtime.py says how a process gets one (`runtime.current()`); this module only composes it
from the parts each concern defines beside its code. ProxyConfig.ready() (proxy/apps.py) makes
it the runtime's factory, so the parts never import this module back.
"""

import os
from collections.abc import Callable

from django.apps import apps

from gateway_project.hashers import HasherThreads

from .balancing import Balancer
from .breaker import WarningThrottle
from .config import ConfigCache
from .forwarding import UpstreamClient
from .recording import LogWriter
from .ssrf import Guard
from .token_quota import Periods


class Runtime:
    """The live state of one process (proxy/runtime.py lists its parts). Built by runtime.start()
    or on first use by runtime.current(); tests build theirs (the `fresh_runtime` fixture)."""

    def __init__(self):
        self.pid = os.getpid()
        self.config = ConfigCache()
        self.log_writer = LogWriter()
        self.balancer = Balancer()
        self.upstream = UpstreamClient()
        self.ssrf = Guard()
        self.token_periods = Periods()
        self.cache_warnings = WarningThrottle()
        self.hashers = HasherThreads()  # sign-in password hashes, off the event loop
        self.job_submitter: Callable | None = None
        self.job_check: Callable | None = None
        self.collectors: list = []  # scraped with the proxy's metrics at /metrics
        self.alert_sender: Callable | None = None  # queues the delivery of new budget alerts (proxy/alerts.py)
        for app in apps.get_app_configs():
            extend = getattr(app, "extend_runtime", None)
            if extend is not None:
                extend(self)

    def set_job_submitter(self, submit: Callable, check: Callable | None = None) -> None:
        """`submit(call, incoming, body)` queues an admitted call and returns its 202 answer (an
        Answer-like object: status, reason, headers, body when iterated, close() ends the call).
        `check(incoming)` raises a GatewayError for what a job cannot take (run before admission)."""
        self.job_submitter, self.job_check = submit, check

    def set_alert_sender(self, send: Callable) -> None:
        """`send(alert_ids)` queues the delivery of budget alerts just recorded, in the log writer's
        transaction (so an alert and its delivery commit together)."""
        self.alert_sender = send

    def add_collector(self, collector) -> None:
        """Serve a collector of a layer above the proxy (its collect() runs at each scrape)."""
        if all(type(c) is not type(collector) for c in self.collectors):
            self.collectors.append(collector)
