"""What the gateway does when its shared state (the Django cache, Redis in production) is unreachable.

Only a failure to reach the cache counts: the connection refused, reset or timed out, Redis still
loading its data after a restart, django-ratelimit's sign that it could not read a counter
(quotas raise ConnectionError for it), or the database that seeds the token counters being
unreachable. Then GATEWAY_CACHE_FAILURE decides for quotas: "open" serves the call without quota
checks, "closed" refuses it with 503. Circuit breakers read as closed either way (see breaker.py).

Any other exception is a bug in the gateway: it propagates, so the call ends with a 500 JSON error
and its log row, and the error is logged with its traceback. Serving without quotas because of a
bug would hide the bug and lift every limit.
"""

from django.conf import settings
from django.db import InterfaceError, OperationalError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

# redis-py's BusyLoadingError is a ConnectionError; OSError covers socket errors and the builtin
# ConnectionError quotas raise for django-ratelimit's unreadable counter.
UNREACHABLE = (RedisConnectionError, RedisTimeoutError, OSError, OperationalError, InterfaceError)


def unreachable(exc: BaseException) -> bool:
    """True when `exc` means the cache (or the database behind it) could not be reached."""
    return isinstance(exc, UNREACHABLE)


def fail_closed() -> bool:
    """GATEWAY_CACHE_FAILURE=closed: refuse calls whose limits cannot be checked."""
    return settings.GATEWAY_CACHE_FAILURE == "closed"
