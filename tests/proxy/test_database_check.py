"""The short database check (proxy/database.py) sees a server that went away, even when the pool
still holds an idle connection to it: the check used to pass with that connection, and the
request after it waited DATABASE_POOL_TIMEOUT for the pool's replacement (a job submission in a
fault run's outage waited 10 s for its 503; with a longer pool timeout, for ever)."""

import time

import psycopg
import pytest
from django.db import OperationalError
from psycopg_pool import ConnectionPool

from proxy import database


class PooledConnection:
    """What proxy/database.py reads of Django's connection: no open connection, and its pool."""

    def __init__(self, pool):
        self.connection, self.pool = None, pool


def test_the_check_fails_fast_when_the_pool_holds_a_connection_the_server_closed(private_pg, monkeypatch):
    pool = ConnectionPool(private_pg.url(), min_size=1, max_size=2, timeout=120, open=True)
    try:
        pool.wait(30)  # its idle connection is there
        with pool.connection() as conn:
            conn.execute("SELECT 1")
        monkeypatch.setattr(database, "connection", PooledConnection(pool))
        database.connect(1.0)  # the server answers

        private_pg.stop()
        with pytest.raises(OperationalError):
            database.connect(1.0)

        private_pg.start()
        deadline = time.monotonic() + 60  # the pool connects again with its own backoff: a bound
        while True:
            try:
                database.connect(1.0)
                break
            except OperationalError:
                assert time.monotonic() < deadline, "the pool never connected again"
        with pool.connection() as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        pool.close()


def test_a_live_idle_connection_passes_without_being_dropped(private_pg):
    with psycopg.connect(private_pg.url()) as conn:
        conn.execute("SELECT 1")
        assert not database.closed_by_the_server(conn)
        assert conn.execute("SELECT 2").fetchone() == (2,)
