"""A database connection without waiting DATABASE_POOL_TIMEOUT for it when the database is down.

With PostgreSQL, Django takes connections from a psycopg pool that waits DATABASE_POOL_TIMEOUT
(10 s) for one; when the database is down none ever comes, so every caller would hang that long.
The configuration check, a key lookup and /readyz ask the pool first with a short timeout of
their own. SQLite (a local file) has no pool and nothing to wait for.
"""

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
    try:
        with pool.connection(timeout=timeout):
            pass
    except PoolTimeout as exc:
        raise OperationalError(f"no database connection within {timeout} s") from exc
