"""Work done while the database is away is kept, not redone: its record is written once the
database answers again.

A worker that has an upstream's answer for a job, or has just POSTed a webhook, when the database
goes away would otherwise drop what it did; the job (or delivery) then runs again once its lease
lapses, calling the upstream (or the receiver) twice. Seen in a fault run (bench/faults.py): 3 of
47 jobs answered during a 20 s outage ran twice. The worker still holds the work meanwhile (its
keeper renews the lease as soon as the database is back, jobs/leases.py), so nobody else takes it.
"""

import logging
import time

from django.conf import settings
from django.db import Error as DatabaseError
from django.db import close_old_connections, connection

from proxy.jobs_api import connect_database

log = logging.getLogger("gateway.jobs")
FIRST_WAIT, LAST_WAIT = 0.5, 2.0  # between two tries to write while the database is away


def keep(what: str, write, *args, **kwargs):
    """`write(*args, **kwargs)`, tried again while the database is away until it is written.

    A write that fails while the database answers is tried once more, on a fresh connection (the
    one it used may be a connection the outage broke); failing again, it is raised, as before."""
    wait = FIRST_WAIT
    once_more = True
    while True:
        try:
            connect_database(settings.GATEWAY_CONFIG_DB_TIMEOUT)  # not the pool's 10 s when it is away
            return write(*args, **kwargs)
        except DatabaseError as exc:
            if database_answers():
                if not once_more:
                    raise
                once_more = False
                continue
            once_more = True
            log.warning(
                "%s: the database is away (%s); kept, written when it is back (again in %.1f s)", what, exc, wait
            )
        time.sleep(wait)
        wait = min(LAST_WAIT, wait * 2)


def database_answers() -> bool:
    try:
        close_old_connections()  # a connection the outage broke is not reused
        connect_database(settings.GATEWAY_CONFIG_DB_TIMEOUT)
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return True
    except DatabaseError:
        return False
