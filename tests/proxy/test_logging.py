"""One RequestLog row per call through the proxy, whatever its outcome."""

import logging
import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.test import override_settings
from django.utils import timezone

from proxy import recording
from routes_admin.models import RequestLog
from tests.factories import auth, make_key, make_route, make_target
from tests.servers import free_port
from tests.upstream import json_reply

pytestmark = pytest.mark.django_db

USAGE = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}


def drain(response) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else response.content


def test_a_successful_call_has_one_row_with_every_field(client, upstream):
    upstream.reply = json_reply({"id": "x", "usage": USAGE})
    route = make_route(name="chat")
    make_target(route, upstream.url, name="gpu-1")
    key, secret = make_key(routes=[route])
    before = timezone.now()
    body = b'{"model": "m", "messages": []}'
    response = client.post(
        "/v1/chat/completions?debug=1",
        body,
        content_type="application/json",
        REMOTE_ADDR="192.0.2.44",
        HTTP_X_REQUEST_ID="log-me-1",
        **auth(secret),
    )
    answer = drain(response)
    row = RequestLog.objects.get()
    assert before <= row.created <= timezone.now()
    assert row.request_id == "log-me-1"
    assert (row.api_key_id, row.key_prefix) == (key.id, key.prefix)
    assert (row.route_id, row.route_name) == (route.id, "chat")
    assert (row.method, row.path, row.status) == ("POST", "/v1/chat/completions", 200)
    assert row.latency_ms > 0
    assert row.target == "gpu-1"
    assert row.bytes_in == len(body)
    assert row.bytes_out == len(answer)
    assert (row.prompt_tokens, row.completion_tokens, row.total_tokens) == (11, 7, 18)
    assert row.error_type == ""
    assert row.client_ip == "192.0.2.44"


def test_a_call_without_usage_has_no_token_counts(client, upstream):
    upstream.reply = json_reply({"data": []})
    route = make_route(upstream.url)
    _, secret = make_key(routes=[route])
    drain(client.get("/v1/models", **auth(secret)))
    row = RequestLog.objects.get()
    assert (row.prompt_tokens, row.completion_tokens, row.total_tokens) == (None, None, None)


def test_upstream_errors_are_logged_with_their_status(client, upstream):
    upstream.reply = json_reply({"error": "busy"}, status=503)
    route = make_route(upstream.url, max_attempts=1)
    _, secret = make_key(routes=[route])
    drain(client.get("/v1/models", **auth(secret)))
    row = RequestLog.objects.get()
    assert row.status == 503 and row.route_name == route.name


@pytest.fixture
def world(upstream):
    route = make_route(upstream.url, name="main", methods="POST", max_body_bytes=100)
    slow = make_route(name="slow", path_prefix="/slow", read_timeout=0.3, methods="GET")
    make_target(slow, upstream.url)
    dead = make_route(f"http://127.0.0.1:{free_port()}", name="dead", path_prefix="/dead", methods="GET")
    _, secret = make_key(routes=[route, slow, dead])
    _, stranger = make_key(routes=[])
    _, expired = make_key(routes=[route], expires=timezone.now() - timedelta(days=1))
    return {"secret": secret, "stranger": stranger, "expired": expired}


FAILURES = [
    # name, method, path, key, body, status, error type, route logged
    ("no key", "POST", "/v1/x", None, b"{}", 401, "invalid_api_key", ""),
    ("expired key", "POST", "/v1/x", "expired", b"{}", 401, "invalid_api_key", ""),
    ("unknown key", "POST", "/v1/x", "gw_12345678_nope", b"{}", 401, "invalid_api_key", ""),
    ("not allowed", "POST", "/v1/x", "stranger", b"{}", 403, "permission_denied", "main"),
    ("no route", "POST", "/nothing", "secret", b"{}", 404, "not_found", ""),
    ("wrong method", "GET", "/v1/x", "secret", b"", 405, "method_not_allowed", ""),
    ("too large", "POST", "/v1/x", "secret", b"x" * 101, 413, "request_too_large", ""),
    ("unreachable", "GET", "/dead/x", "secret", b"", 502, "upstream_unavailable", "dead"),
    ("timeout", "GET", "/slow/x", "secret", b"", 504, "upstream_timeout", "slow"),
]


@pytest.mark.parametrize(
    "method, path, key, body, status, error_type, route_name", [f[1:] for f in FAILURES], ids=[f[0] for f in FAILURES]
)
def test_each_failure_has_exactly_one_row(
    client, upstream, world, method, path, key, body, status, error_type, route_name
):
    release = threading.Event()
    if status == 504:
        upstream.reply = lambda handler: release.wait(5)
    headers = {"HTTP_AUTHORIZATION": f"Bearer {world.get(key, key)}"} if key else {}
    try:
        response = client.generic(
            method, path, body, content_type="application/json", HTTP_X_REQUEST_ID=f"fail-{status}", **headers
        )
    finally:
        release.set()
    assert response.status_code == status
    row = RequestLog.objects.get()
    assert (row.status, row.error_type, row.request_id) == (status, error_type, f"fail-{status}")
    assert (row.method, row.path) == (method, path)
    assert row.route_name == route_name
    assert row.client_ip == "127.0.0.1"
    assert row.latency_ms >= 0
    if status in (502, 504):
        assert row.target  # which target failed is what an operator needs
    if status in (403, 413, 502, 504):
        assert row.key_prefix  # the key was known by then


def test_paths_outside_the_proxy_leave_no_row(client, admin_client):
    client.get("/healthz")
    client.get("/api/unknown")
    admin_client.get("/admin/")
    assert RequestLog.objects.count() == 0


def test_a_failing_log_write_does_not_fail_the_call_and_is_reported(client, upstream, caplog):
    upstream.reply = json_reply({"ok": True, "usage": USAGE})
    route = make_route(upstream.url)
    _, secret = make_key(routes=[route])
    with connection.cursor() as cursor:  # the test's transaction brings the table back afterwards
        cursor.execute(f"DROP TABLE {RequestLog._meta.db_table}")
    with caplog.at_level(logging.ERROR, logger="gateway.recording"):
        response = client.get("/v1/models", **auth(secret))
        assert response.status_code == 200
        assert (
            drain(response)
            == b'{"ok": true, "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}}'
        )
        assert client.get("/v1/models").status_code == 401  # the gateway's own errors too
    reports = [r for r in caplog.records if r.name == "gateway.recording" and r.levelno >= logging.ERROR]
    assert reports, "the failed write was not reported in the server's log"
    assert any(r.exc_info for r in reports)  # with the database's own error, for the operator


@pytest.fixture
def batched(fresh_runtime):
    """GATEWAY_LOG_FLUSH_SECONDS > 0, with a writer that has no background thread: the test calls flush()."""
    fresh_runtime.log_writer = recording.LogWriter(background=False)
    with override_settings(GATEWAY_LOG_FLUSH_SECONDS=60, GATEWAY_LOG_BATCH_SIZE=3):
        yield fresh_runtime.log_writer


def test_the_batched_writer_writes_every_row_on_flush(client, upstream, batched):
    upstream.reply = json_reply({"ok": True, "usage": USAGE})
    route = make_route(upstream.url)
    _, secret = make_key(routes=[route])
    for n in range(7):
        drain(client.get("/v1/models", HTTP_X_REQUEST_ID=f"batch-{n}", **auth(secret)))
    drain(client.get("/v1/models"))  # a 401 is queued like the rest
    assert RequestLog.objects.count() == 0  # queued, not written by the call
    assert recording.pending() == 8
    assert recording.flush() == 8  # in batches of 3
    assert recording.pending() == 0
    rows = RequestLog.objects.order_by("id")
    assert sorted(r.request_id for r in rows if r.status == 200) == [f"batch-{n}" for n in range(7)]
    assert [r.status for r in rows].count(401) == 1
    assert all(r.total_tokens == 18 for r in rows if r.status == 200)


def test_a_flush_writes_the_rows_queued_when_it_started(client, upstream, batched):
    """Rows of calls that end during a flush wait for the next one: chasing them under steady
    traffic turned each flush into a stream of one-row transactions."""
    route = make_route(upstream.url)
    _, secret = make_key(routes=[route])
    for n in range(4):
        drain(client.get("/v1/models", HTTP_X_REQUEST_ID=f"before-{n}", **auth(secret)))
    ended = []

    def a_call_ends_as_the_first_batch_is_written(execute, sql, params, many, context):
        if not ended:  # the flush's first statement: another call ends meanwhile
            ended.append(True)
            drain(client.get("/v1/models", HTTP_X_REQUEST_ID="during", **auth(secret)))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(a_call_ends_as_the_first_batch_is_written):
        assert recording.flush() == 4  # two batches of 3 and 1: the rows queued at the start
    assert ended
    assert recording.pending() == 1
    assert recording.flush() == 1
    assert sorted(RequestLog.objects.values_list("request_id", flat=True)) == [
        "before-0",
        "before-1",
        "before-2",
        "before-3",
        "during",
    ]


def test_rows_that_could_not_be_written_are_kept_for_the_next_flush(client, upstream, batched, caplog):
    route = make_route(upstream.url)
    _, secret = make_key(routes=[route])
    for _ in range(2):
        drain(client.get("/v1/models", **auth(secret)))
    with connection.cursor() as cursor:
        cursor.execute("SAVEPOINT table_gone")
        cursor.execute(f"DROP TABLE {RequestLog._meta.db_table}")
    with caplog.at_level(logging.ERROR, logger="gateway.recording"):
        assert recording.flush() == 0
    assert recording.pending() == 2
    with connection.cursor() as cursor:
        cursor.execute("ROLLBACK TO SAVEPOINT table_gone")  # the database is back
    assert recording.flush() == 2
    assert RequestLog.objects.count() == 2
