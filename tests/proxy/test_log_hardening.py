"""No input can stop the request log, and /readyz and /metrics say when it fails.

Run on SQLite and on PostgreSQL (DATABASE_URL): PostgreSQL's COPY is what refused NUL bytes,
long methods and bad addresses.
"""

import json

import psycopg
import pytest
from django.db import close_old_connections, connection
from django.test import override_settings
from prometheus_client.parser import text_string_to_metric_families

from proxy import pipeline, recording
from proxy.call import Call
from routes_admin.models import APIKey, RequestLog
from tests.factories import auth, make_key, make_route
from tests.upstream import json_reply

pytestmark = pytest.mark.django_db

USAGE = {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}


def scrape(client) -> str:
    return client.get("/metrics").content.decode()


def value(text: str, name: str, **labels) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return 0.0


def start_call(request_id: str, method: str = "GET", client_ip: str = "127.0.0.1"):
    return pipeline.start(pipeline.Incoming(method=method, path="/v1/x", client_ip=client_ip, request_id=request_id))


def drain(response) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else response.content


@pytest.fixture
def batched(fresh_runtime):
    """Rows are queued; the test calls flush() (a writer with no background thread)."""
    fresh_runtime.log_writer = recording.LogWriter(background=False)
    with override_settings(GATEWAY_LOG_FLUSH_SECONDS=60, GATEWAY_LOG_BATCH_SIZE=500):
        yield fresh_runtime.log_writer


@pytest.fixture
def secret(upstream):
    upstream.reply = json_reply({"ok": True, "usage": USAGE})
    return make_key(routes=[make_route(upstream.url, name="main")])[1]


HOSTILE = [
    # name, method, path, extra request headers
    ("nul in path", "GET", "/v1/a%00b", {}),
    ("11-char method", "PROPFINDXYZ", "/v1/x", {}),
    ("huge path", "GET", "/v1/" + "p" * 20000, {}),
    ("weird unicode", "GET", "/v1/%F0%9F%92%A5%E2%80%AE%CC%81%EF%BF%BF", {}),
    ("invalid client address", "GET", "/v1/x", {"REMOTE_ADDR": "not-an-address"}),
]


@pytest.mark.parametrize("method, path, headers", [h[1:] for h in HOSTILE], ids=[h[0] for h in HOSTILE])
def test_hostile_requests_neither_lose_their_row_nor_block_later_ones(client, batched, secret, method, path, headers):
    response = client.generic(method, path, HTTP_X_REQUEST_ID="hostile", **headers)  # no key: 401
    drain(client.get("/v1/models", HTTP_X_REQUEST_ID="after", **auth(secret)))
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "invalid_api_key"
    assert recording.pending() == 2
    assert recording.flush() == 2
    assert recording.pending() == 0
    hostile, after = RequestLog.objects.get(request_id="hostile"), RequestLog.objects.get(request_id="after")
    assert after.status == 200 and after.total_tokens == 7
    assert hostile.status == 401
    assert "\x00" not in hostile.path and len(hostile.path) <= 2000
    assert len(hostile.method) <= 10 and hostile.method == method[:10]
    assert hostile.client_ip == (None if "REMOTE_ADDR" in headers else "127.0.0.1")
    if "unicode" in method + path:
        assert hostile.path.startswith("/v1/\U0001f4a5")


def test_values_out_of_every_range_are_made_storable(client, batched, secret):
    call = start_call("r" * 300, method="PROPFINDXYZ\x00", client_ip="fe80::1%eth0")
    call.status = 70000
    call.bytes_out = 2**80
    call.attempts = -3
    call.usage = {"prompt_tokens": 2**40, "completion_tokens": -1, "total_tokens": 2**40}
    call.targets_tried = ["a\x00b"]
    call.target = "t" * 500
    call.error_type = "e\x00" * 100
    pipeline.finish(call)
    assert recording.flush() == 1
    row = RequestLog.objects.get()
    assert row.request_id == "r" * 128 and row.method == "PROPFINDXY"
    assert (row.status, row.attempts) == (32767, 0)
    assert row.bytes_out == 2**63 - 1
    assert (row.prompt_tokens, row.completion_tokens) == (2**31 - 1, 0)
    assert row.targets_tried == ["ab"]
    assert row.target == "t" * 100 and row.error_type == "e" * 50
    assert row.client_ip == "fe80::1"


def queued_row(request_id: str, **values) -> dict:
    """A row put straight into the writer's queue, past the cleaning record() does."""
    call = Call(request_id=request_id, method="GET", path="/v1/x", client_ip="127.0.0.1")  # not started: no metrics
    call.status = 200
    row = recording._row(call, 1.0)
    row.update(values)
    return row


def test_the_writer_stores_a_row_exactly_as_a_model_save_does(batched):
    """The writer inserts plain values (COPY on PostgreSQL, one executemany on SQLite), not models:
    every column must read back as the model's own save would have stored it."""
    import datetime
    import uuid
    from decimal import Decimal

    from routes_admin.models import RequestLog as Log

    values = dict(
        created=datetime.datetime(2026, 3, 4, 5, 6, 7, 891011, tzinfo=datetime.UTC),
        client_ip="2001:db8::1",
        detail={"why": "é\u2028", "nested": [1, 2.5, None, {"a": True}]},
        targets_tried=["a", "b"],
        job_id=str(uuid.UUID(int=7)),
        queue_ms=12.345,
        cost=Decimal("0.000123456789"),
        streamed=True,
        usage_estimated=True,
        prompt_tokens=5,
        model="gpt-ö",
    )
    batched.pending_rows.append(queued_row("plain", **values))
    assert recording.flush() == 1
    by_model = queued_row("model", **values)
    Log(**by_model).save()
    plain, model = (
        {k: v for k, v in Log.objects.filter(request_id=r).values().get().items() if k not in ("id", "request_id")}
        for r in ("plain", "model")
    )
    assert plain == model
    assert plain["job_id"] == uuid.UUID(int=7) and plain["cost"] == Decimal("0.000123456789")


def test_rows_missing_a_column_get_its_default(batched):
    """Rows made elsewhere (bench/console.py leaves the cost out) are stored with the model's defaults."""
    row = queued_row("short")
    for name in ("cost", "team_name", "detail", "job_id"):
        del row[name]
    batched.pending_rows.append(row)
    assert recording.flush() == 1
    stored = RequestLog.objects.get()
    assert (stored.cost, stored.team_name, stored.detail, stored.job_id) == (None, "", {}, None)


def test_a_batch_with_a_row_the_database_refuses_stores_all_the_others(client, batched):
    before = scrape(client)
    rows = [queued_row("ok-1"), queued_row("bad", bytes_out=2**80), queued_row("ok-2")]
    batched.pending_rows.extend(rows)
    assert recording.flush() == 2
    assert recording.pending() == 0  # the bad row is dropped, not retried forever
    assert sorted(RequestLog.objects.values_list("request_id", flat=True)) == ["ok-1", "ok-2"]
    after = scrape(client)
    assert (
        value(after, "gateway_log_rows_dropped_total", reason="unstorable")
        - value(before, "gateway_log_rows_dropped_total", reason="unstorable")
        == 1
    )
    assert value(after, "gateway_log_rows_written_total") - value(before, "gateway_log_rows_written_total") == 2
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"]["request_log"] == "ok"


def test_an_outage_keeps_the_rows_with_their_key_and_route_and_readyz_says_so(client, batched, secret):
    for n in range(3):
        drain(client.get("/v1/models", HTTP_X_REQUEST_ID=f"out-{n}", **auth(secret)))
    before = scrape(client)
    table = RequestLog._meta.db_table
    with connection.cursor() as cursor:  # the table is away: the database cannot take any row
        cursor.execute("SAVEPOINT outage")
        cursor.execute(f"ALTER TABLE {table} RENAME TO {table}_away")
    assert recording.flush() == 0
    assert recording.pending() == 3
    ready = client.get("/readyz")
    assert ready.status_code == 200  # degraded but ready: see proxy/health.py
    assert ready.json()["status"] == "degraded"
    assert ready.json()["checks"]["request_log"] == "failing"
    after = scrape(client)
    assert value(after, "gateway_log_write_failures_total") - value(before, "gateway_log_write_failures_total") >= 1
    with connection.cursor() as cursor:
        cursor.execute("ROLLBACK TO SAVEPOINT outage")  # the database is back
    assert recording.flush() == 3
    key = APIKey.objects.get()
    rows = RequestLog.objects.all()
    assert len(rows) == 3
    assert all(row.api_key_id == key.id and row.route_name == "main" and row.route_id for row in rows)
    assert client.get("/readyz").json()["status"] == "ok"


@pytest.mark.django_db(transaction=True)
def test_a_row_whose_key_was_deleted_meanwhile_is_stored_without_it(client, batched, secret):
    drain(client.get("/v1/models", HTTP_X_REQUEST_ID="orphan", **auth(secret)))
    key = APIKey.objects.get()
    prefix = key.prefix
    key.delete()
    drain(client.get("/v1/models", HTTP_X_REQUEST_ID="no-key"))
    assert recording.flush() == 2
    row = RequestLog.objects.get(request_id="orphan")
    assert row.api_key_id is None and row.key_prefix == prefix
    assert row.route_id is not None  # the route still exists: kept


@pytest.mark.skipif(connection.vendor != "postgresql", reason="terminates a PostgreSQL connection")
@pytest.mark.django_db(transaction=True)
def test_a_connection_killed_by_the_server_keeps_key_and_route(client, batched, secret):
    for n in range(2):
        drain(client.get("/v1/models", HTTP_X_REQUEST_ID=f"killed-{n}", **auth(secret)))
    connection.ensure_connection()
    pid = connection.connection.info.backend_pid
    settings = connection.settings_dict
    with psycopg.connect(
        host=settings["HOST"], port=settings["PORT"], user=settings["USER"], dbname=settings["NAME"], autocommit=True
    ) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", [pid])
    assert recording.flush() == 0
    assert recording.pending() == 2
    assert client.get("/readyz").json()["checks"]["request_log"] == "failing"
    close_old_connections()  # what the writer does after each flush: the broken connection goes
    assert recording.flush() == 2
    key = APIKey.objects.get()
    assert set(RequestLog.objects.values_list("api_key_id", flat=True)) == {key.id}
    assert None not in RequestLog.objects.values_list("route_id", flat=True)


def test_a_full_queue_counts_the_rows_it_drops(client, batched, secret, monkeypatch):
    monkeypatch.setattr(recording, "MAX_PENDING", 2)
    before = scrape(client)
    for _ in range(5):
        drain(client.get("/v1/models", **auth(secret)))
    assert recording.pending() == 2
    after = scrape(client)
    assert (
        value(after, "gateway_log_rows_dropped_total", reason="queue_full")
        - value(before, "gateway_log_rows_dropped_total", reason="queue_full")
        == 3
    )


def test_a_model_name_with_nul_and_any_length_is_stored(client, batched, secret):
    """The model the client names is logged too (model, and in detail): the same family."""
    body = json.dumps({"model": "gpt\u0000\ud800x", "messages": []}).encode()
    response = client.post("/v1/chat/completions", body, content_type="application/json", **auth(secret))
    drain(response)
    drain(client.get("/v1/models", HTTP_X_REQUEST_ID="after", **auth(secret)))
    assert recording.flush() == 2
    row = RequestLog.objects.exclude(request_id="after").get()
    assert row.model == "gpt?x"  # NUL removed, the lone surrogate replaced
    assert "\\u0000" not in json.dumps(row.detail)


def test_a_stopping_writer_writes_rows_queued_during_its_flush_instead_of_spooling_them(batched, settings, tmp_path):
    """Calls that finish while a stopping worker's flush is writing queue more rows; with the
    database up they are written too. Spooled, they reached the database only when a later process
    replayed them: a restarted worker's last rows went missing from the log until then."""
    settings.GATEWAY_LOG_SPOOL_DIR = str(tmp_path)
    batched.queue(queued_row("first"))
    late = []

    def finish_a_call_meanwhile(execute, sql, params, many, context):
        if not late:
            late.append(sql)
            batched.queue(queued_row("late"))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(finish_a_call_meanwhile):
        batched.stop()
    assert late  # the second row was queued while the first was being written
    assert sorted(RequestLog.objects.values_list("request_id", flat=True)) == ["first", "late"]
    assert batched.pending() == 0
    assert not list(tmp_path.rglob("*.spool"))
