"""Password hashing off the event loop.

A worker serves every call in one gevent loop on one OS thread. PBKDF2 with Django's 1,000,000
iterations is about half a second of CPU; run in the loop, each sign-in attempt froze every
proxied call of the worker for that long (4 parallel attempts took calls from 4 ms to 2.3 s).
hashlib.pbkdf2_hmac releases the GIL, so run in an OS thread it leaves the loop free.

The threads are a small pool of their own, not gevent's hub pool: that one also resolves host
names for the upstream calls, and a flood of sign-ins must not queue those behind hashes. Its
size (GATEWAY_HASHER_THREADS) also caps the cores a flood can take from the proxy.
"""

import gevent
from django.conf import settings
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from gevent.threadpool import ThreadPool

from proxy import runtime


class HasherThreads:
    """The pool of hashing threads of one process (a part of its runtime, proxy/live.py: a forked
    worker builds its own), made on the first sign-in served in a greenlet."""

    def __init__(self):
        self._pool: ThreadPool | None = None

    def run(self, function, *args):
        if self._pool is None:
            self._pool = ThreadPool(settings.GATEWAY_HASHER_THREADS)
        return self._pool.spawn(function, *args).get()


def _in_a_greenlet() -> bool:
    """True inside a gevent-served request (a spawned greenlet), false in a plain thread."""
    return isinstance(gevent.getcurrent(), gevent.Greenlet)


def off_the_loop(function, *args):
    """function(*args) in a pool thread when called from a greenlet; the greenlet waits, the loop runs."""
    if not _in_a_greenlet():
        return function(*args)  # manage.py, tests, a thread: nothing to keep free
    return runtime.current().hashers.run(function, *args)


class ThreadedPBKDF2PasswordHasher(PBKDF2PasswordHasher):
    """Django's PBKDF2 (same algorithm name, so existing hashes verify) hashed in a pool thread.

    verify() and the dummy hash Django runs for unknown users both go through encode().
    """

    def encode(self, password, salt, iterations=None):
        return off_the_loop(super().encode, password, salt, iterations)
