"""A database connection without waiting DATABASE_POOL_TIMEOUT for it when the database is down.

With PostgreSQL, Django takes connections from a psycopg pool that waits DATABASE_POOL_TIMEOUT
(10 s) for one; when the database is down none ever comes, so every caller would hang that long.
The configuration check, a key lookup and /readyz ask the pool first with a short timeout of
their own. SQLite (a local file) has no pool and nothing to wait for.

An idle pooled connection whose server went away looks available to the pool until it is used:
the check passed with it, Django's own request then got it, failed, and the pool's replacement
was waited for the whole DATABASE_POOL_TIMEOUT (a job submission during a fault run's outage
waited 10 s for its 503). So a connection the server has closed is noticed here, without a round
trip, and dropped: the check then waits for a fresh one within its own timeout.
"""

import time

from django.db import OperationalError, connection


def connect(timeout: float) -> None:
    """Raise OperationalError unless a connection is available within `timeout` seconds."""
    if connection.connection is not None:
        return
    pool = getattr(connection, "pool", None)
    if pool is None:
        return
    from psycopg_pool import PoolTimeout

    pool.open()  # what Django does before its own getconn; a no-op once open
    deadline = time.monotonic() + timeout
    while True:
        try:
            pooled = pool.getconn(timeout=max(0.0, deadline - time.monotonic()))
        except PoolTimeout as exc:
            raise OperationalError(f"no database connection within {timeout} s") from exc
        dropped = closed_by_the_server(pooled)
        if dropped:
            pooled.close()
        pool.putconn(pooled)  # a closed connection is thrown away and replaced by the pool
        if not dropped:
            return


def closed_by_the_server(pooled) -> bool:
    """Whether the server closed this idle connection (it stopped or restarted). libpq reads what
    waits on the socket without blocking: a live idle connection has nothing there; a closed one
    has the server's goodbye (one read) and the end of the stream (the next), which marks it bad."""
    from psycopg import pq

    if pooled.closed:
        return True
    try:
        for _ in range(3):
            pooled.pgconn.consume_input()
    except Exception:  # psycopg raises when a read finds the end of the stream
        return True
    return pooled.pgconn.status != pq.ConnStatus.OK
