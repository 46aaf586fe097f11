"""This process's live state, in one object: what the gateway holds in memory between calls.

    config        the configuration copy and when it was last checked (proxy/config.py)
    log_writer    the queue of log rows, its background thread and its spool (proxy/recording.py)
    balancer      round-robin weights and in-flight counts per target (proxy/balancing.py)
    upstream      the pooled HTTP client to the upstreams (proxy/forwarding.py)
    ssrf          the target guard's verdicts and the addresses it checked (proxy/ssrf.py)
    token_periods this day's and month's token-quota periods (proxy/token_quota.py)
    cache_warnings when an unreachable cache was last reported (proxy/breaker.py)
    job_submitter, job_check, collectors: what layers above the proxy add (the jobs app), through
                  their AppConfig's `extend_runtime(runtime)`, so every runtime built has them

One is built per process: under gunicorn in each worker after the fork
(gateway_project/gunicorn.conf.py `post_fork`), in `manage.py jobs_worker` when it starts, and
otherwise on first use. A forked child never uses its parent's (threads, locks and sockets do not
survive a fork): `os.register_at_fork` forgets it in the child, which then builds its own.

Shared state between processes lives in the Django cache and the database, never here. Tests
build a fresh runtime (the `fresh_runtime` fixture) instead of patching module names.
"""

import os
import threading
from collections.abc import Callable

from django.apps import apps


class Runtime:
    """The live state of one process. Build it with `start()` (or let `current()` do it)."""

    def __init__(self):
        from . import balancing, breaker, config, forwarding, recording, ssrf, token_quota

        self.pid = os.getpid()
        self.config = config.ConfigCache()
        self.log_writer = recording.LogWriter()
        self.balancer = balancing.Balancer()
        self.upstream = forwarding.UpstreamClient()
        self.ssrf = ssrf.Guard()
        self.token_periods = token_quota.Periods()
        self.cache_warnings = breaker.WarningThrottle()
        self.job_submitter: Callable | None = None
        self.job_check: Callable | None = None
        self.collectors: list = []  # scraped with the proxy's metrics at /metrics
        for app in apps.get_app_configs():
            extend = getattr(app, "extend_runtime", None)
            if extend is not None:
                extend(self)

    def set_job_submitter(self, submit: Callable, check: Callable | None = None) -> None:
        """`submit(call, incoming, body)` queues an admitted call and returns its 202 answer (an
        Answer-like object: status, reason, headers, body when iterated, close() ends the call).
        `check(incoming)` raises a GatewayError for what a job cannot take (run before admission)."""
        self.job_submitter, self.job_check = submit, check

    def add_collector(self, collector) -> None:
        """Serve a collector of a layer above the proxy (its collect() runs at each scrape)."""
        if all(type(c) is not type(collector) for c in self.collectors):
            self.collectors.append(collector)


_lock = threading.Lock()
_current: Runtime | None = None


def current() -> Runtime:
    """This process's runtime, built on first use."""
    runtime = _current
    if runtime is None:
        runtime = start()
    return runtime


def has_one() -> bool:
    """Whether this process built its runtime (at exit: nothing to write when it never did)."""
    return _current is not None


def start() -> Runtime:
    """Build this process's runtime now (after a fork, at a worker's start), unless it has one."""
    global _current
    with _lock:
        if _current is None:
            _current = Runtime()
        return _current


def replace(runtime: Runtime | None) -> Runtime | None:
    """Install `runtime` as this process's (None: the next use builds one). Returns the previous
    one. For tests, which start each from a fresh runtime."""
    global _current
    with _lock:
        previous, _current = _current, runtime
    return previous


def _forget_in_child() -> None:
    global _current, _lock
    _current = None
    _lock = threading.Lock()  # another thread may have held it at the fork


os.register_at_fork(after_in_child=_forget_in_child)
