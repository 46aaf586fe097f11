"""How long a log row waits in a worker's memory: what a worker killed with SIGKILL loses.

Under gevent the log writer is one greenlet among the calls' greenlets, and each round trip it
makes to the database gives the turn to every call ready to run before it runs again. A flush of
BEGIN, COPY, the usage updates, the rollups and COMMIT made 7 round trips: under load (20 clients,
2 workers on a busy 2-core machine) flushes lasted up to 3 s and rows waited up to 5 s. A flush is
now one statement, one round trip (proxy/recording.py `_save_in_one_statement`).
"""

import psycopg
import pytest
from django.db import connection

from proxy import recording
from proxy.call import Call
from proxy.storable import storable
from routes_admin.models import KeyUsage, RequestLog
from tests.factories import make_key
from tests.rollup_check import mismatches

postgresql_only = pytest.mark.skipif(connection.vendor != "postgresql", reason="round trips to PostgreSQL")


class KeyStub:
    def __init__(self, key):
        self.id, self.prefix, self.team_name = key.id, key.prefix, ""


def queued_row(key, request_id: str, model: str = "m") -> dict:
    call = Call(request_id=request_id, method="POST", path="/v1/chat/completions", client_ip="127.0.0.1")
    call.key, call.status, call.model = KeyStub(key), 200, model
    call.usage = {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}
    return storable(recording._row(call, 5.0))


@postgresql_only
@pytest.mark.django_db(transaction=True)
def test_a_flush_is_one_round_trip_to_postgresql(fresh_runtime, settings, monkeypatch):
    settings.GATEWAY_LOG_FLUSH_SECONDS = 60
    writer = fresh_runtime.log_writer = recording.LogWriter(background=False)
    keys = [make_key()[0] for _ in range(3)]
    for n in range(60):
        writer.queue(queued_row(keys[n % 3], f"rt-{n}", model=f"model-{n % 4}"))
    connection.ensure_connection()
    waits = []
    real_wait = psycopg.Connection.wait

    def counted(self, *args, **kwargs):  # every exchange with the server goes through Connection.wait
        waits.append(1)
        return real_wait(self, *args, **kwargs)

    monkeypatch.setattr(psycopg.Connection, "wait", counted)
    assert writer.flush() == 60
    monkeypatch.undo()
    assert len(waits) == 1
    assert RequestLog.objects.count() == 60
    assert dict(KeyUsage.objects.values_list("api_key_id", "requests")) == {key.id: 20 for key in keys}
    assert not mismatches()  # the rollups were written in that statement too


@postgresql_only
@pytest.mark.django_db(transaction=True)
def test_a_batch_with_more_groups_than_one_statement_takes_is_written_whole(fresh_runtime, settings, monkeypatch):
    from proxy import rollups

    monkeypatch.setattr(rollups, "GROUPS_PER_POSTGRESQL_STATEMENT", 4)
    settings.GATEWAY_LOG_FLUSH_SECONDS = 60
    writer = fresh_runtime.log_writer = recording.LogWriter(background=False)
    key, _ = make_key()
    for n in range(12):
        writer.queue(queued_row(key, f"many-{n}", model=f"model-{n}"))
    assert writer.flush() == 12
    assert RequestLog.objects.count() == 12
    assert KeyUsage.objects.get(api_key=key).total_tokens == 36
    assert not mismatches()
