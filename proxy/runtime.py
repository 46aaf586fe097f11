"""This process's live state, in one object (a proxy.live.Runtime), reached through `current()`.

    config        the configuration copy and when it was last checked (proxy/config.py)
    log_writer    the queue of log rows, its background thread and its spool (proxy/recording.py)
    balancer      round-robin weights and in-flight counts per target (proxy/balancing.py)
    upstream      the pooled HTTP client to the upstreams (proxy/forwarding.py)
    ssrf          the target guard's verdicts and the addresses it checked (proxy/ssrf.py)
    token_periods this day's and month's token-quota periods (proxy/token_quota.py)
    cache_warnings when an unreachable cache was last reported (proxy/breaker.py)
    hashers       the threads that hash sign-in passwords off the event loop (gateway_project/hashers.py)
    job_submitter, job_check, collectors: what layers above the proxy add (the jobs app), through
                  their AppConfig's `extend_runtime(runtime)`, so every runtime built has them

One is built per process: under gunicorn in each worker after the fork, once the application
is loaded (gateway_project/gunicorn.conf.py `post_worker_init`), in `manage.py jobs_worker` when it starts, and
otherwise on first use. A forked child never uses its parent's (threads, locks and sockets do not
survive a fork): `os.register_at_fork` forgets it in the child, which then builds its own.

This module imports none of the parts (they import it, to reach theirs): ProxyConfig.ready()
installs proxy.live.Runtime, which composes them, as the factory.

Shared state between processes lives in the Django cache and the database, never here. Tests
build a fresh runtime (the `fresh_runtime` fixture) instead of patching module names.
"""

import os
import threading
from collections.abc import Callable


class _Process:
    """The accessor's own state, this module's one object: the process's runtime, what builds
    it, and the lock that builds it once."""

    __slots__ = ("lock", "runtime", "factory")

    def __init__(self):
        self.lock = threading.Lock()
        self.runtime = None  # a proxy.live.Runtime
        self.factory: Callable | None = None  # proxy.live.Runtime, installed by ProxyConfig.ready()


_process = _Process()


def current():
    """This process's runtime, built on first use."""
    runtime = _process.runtime
    if runtime is None:
        runtime = start()
    return runtime


def install(factory: Callable) -> None:
    """What builds a runtime (ProxyConfig.ready(): proxy.live.Runtime, which imports every part)."""
    _process.factory = factory


def build():
    """A new runtime, not installed (start() installs one; tests install theirs with replace())."""
    if _process.factory is None:
        raise RuntimeError("no runtime factory: Django's apps are not ready (proxy/apps.py installs it)")
    return _process.factory()


def has_one() -> bool:
    """Whether this process built its runtime (at exit: nothing to write when it never did)."""
    return _process.runtime is not None


def start():
    """Build this process's runtime now (after a fork, at a worker's start), unless it has one."""
    with _process.lock:
        if _process.runtime is None:
            _process.runtime = build()
        return _process.runtime


def replace(runtime):
    """Install `runtime` as this process's (None: the next use builds one). Returns the previous
    one. For tests, which start each from a fresh runtime."""
    with _process.lock:
        previous, _process.runtime = _process.runtime, runtime
    return previous


def _forget_in_child() -> None:
    _process.runtime = None
    _process.lock = threading.Lock()  # another thread may have held it at the fork


os.register_at_fork(after_in_child=_forget_in_child)
