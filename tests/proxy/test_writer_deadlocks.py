"""Log writers in several processes never deadlock on the rows they share (per-key usage, rollups).

Two writers whose batches name the same keys in opposite orders: one has taken the first key's
usage row in its transaction and is about to take the second, the other is writing a batch that
names them the other way round. Each takes shared rows in one stable order, so the second writer
waits instead of holding the row the first one needs.
"""

import threading
import time

import pytest
from django.db import connection, transaction

from proxy import recording
from proxy.call import Call
from routes_admin.models import KeyUsage
from tests.factories import make_key

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="row locks between writers: PostgreSQL"),
]


class KeyStub:
    def __init__(self, key):
        self.id, self.prefix = key.id, key.prefix
        self.team_name = ""  # the row names the key's team (spend)


def row(key, request_id: str) -> dict:
    call = Call(request_id=request_id, method="POST", path="/v1/chat/completions", client_ip="127.0.0.1")
    call.key, call.status = KeyStub(key), 200
    call.usage = {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}
    return recording._row(call, 5.0)


def waiting_for_a_lock(pid: int) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", [pid])
        found = cursor.fetchone()
    return bool(found) and found[0] == "Lock"


def test_writers_taking_keys_in_opposite_orders_do_not_deadlock():
    low, _ = make_key()
    high, _ = make_key()
    assert low.id < high.id
    recording._save([row(low, "warm-1"), row(high, "warm-2")])  # today's usage rows exist for both
    errors, pids = [], {}
    first_key_taken = threading.Event()

    def writer_in_steps():
        """Holds the low key's rows (as a writer between two of its keys), then writes the high key."""
        try:
            with transaction.atomic():
                recording._save([row(low, "steps-1")])
                first_key_taken.set()
                deadline = time.monotonic() + 10
                while not (pids.get("other") and waiting_for_a_lock(pids["other"])):
                    assert time.monotonic() < deadline, "the other writer never reached the shared rows"
                    time.sleep(0.05)
                recording._save([row(high, "steps-2")])
        except Exception as exc:  # a deadlock is raised here or in the other writer
            errors.append(exc)
        finally:
            connection.close()

    def writer_in_reverse():
        """A batch naming the high key first, written while the other writer holds the low key."""
        try:
            first_key_taken.wait(10)
            with transaction.atomic():
                with connection.cursor() as cursor:
                    cursor.execute("SELECT pg_backend_pid()")
                    pids["other"] = cursor.fetchone()[0]
                recording._save([row(high, "reverse-1"), row(low, "reverse-2")])
        except Exception as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=writer_in_steps), threading.Thread(target=writer_in_reverse)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors, errors
    usage = dict(KeyUsage.objects.values_list("api_key_id", "requests"))
    assert usage == {low.id: 3, high.id: 3}
