"""The configuration copy and the request log writer with production's timing (the
`production_timing` fixture: GATEWAY_CONFIG_TTL=1 s, GATEWAY_LOG_FLUSH_SECONDS=0.5 s), where the
other tests run with 0 for both: a change another process makes is served within the TTL and not
before this process's next check, a change made here is served at once, and the rows of a batch of
calls are written by the background writer, each once, with rollups equal to the log.
"""

import time

import pytest
from django.test import override_settings
from django.utils import timezone

from proxy import recording
from routes_admin.models import APIKey, ConfigGeneration, RequestLog
from tests import rollup_check
from tests.factories import auth, make_key, make_route
from tests.upstream import json_reply

TTL = 1.0  # the fixture's GATEWAY_CONFIG_TTL
USAGE = {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}


def status(client, secret: str, request_id: str = "") -> int:
    response = client.get("/v1/models", HTTP_X_REQUEST_ID=request_id or "timing", **auth(secret))
    if response.streaming:
        b"".join(response.streaming_content)
    return response.status_code


def written_by_the_writer(within: float = 15.0) -> bool:
    """Wait until the writer thread has taken every queued row, then until its flush is on disk
    (flush() waits for a flush in progress); True when it wrote them all, nothing left for us.
    The test reads no log table meanwhile: in-memory SQLite locks a table read while it is written."""
    deadline = time.monotonic() + within
    while recording.pending() and time.monotonic() < deadline:
        time.sleep(0.05)
    return recording.flush() == 0


@pytest.mark.slow  # waits out a real 1 s TTL
def test_a_change_made_by_another_process_is_served_within_the_ttl_not_before(client, upstream, production_timing):
    route = make_route(upstream.url)
    key, secret = make_key(routes=[route])
    loaded = time.monotonic()  # the copy this call loads is checked at or after this
    assert status(client, secret) == 200
    # In-memory SQLite takes one writer at a time and refuses a second at once ("table is
    # locked"): the change below waits until the writer has written this call's row.
    assert written_by_the_writer()

    # Another process revokes the key: it changes the row and bumps the generation; this
    # process's copy is not told (a queryset update sends no signal).
    APIKey.objects.filter(pk=key.pk).update(revoked=timezone.now())
    ConfigGeneration.objects.bump()
    changed = time.monotonic()

    # Until this process's next check the copy in hand serves: a refusal now is allowed only if a
    # whole TTL has passed since the copy was loaded (a loaded machine can take that long).
    assert status(client, secret) == 200 or time.monotonic() - loaded >= TTL

    # Any call that starts a TTL after the change checks again and sees it.
    time.sleep(max(0.0, changed + TTL - time.monotonic()))
    assert status(client, secret) == 401


def test_a_change_made_in_this_process_is_served_at_once(client, upstream, production_timing):
    route = make_route(upstream.url)
    key, secret = make_key(routes=[route])
    assert status(client, secret) == 200
    assert written_by_the_writer()  # one writer at a time on in-memory SQLite: the call's row first
    key.revoke()  # saved here: this process forgets its copy when the change commits
    assert status(client, secret) == 401


def test_a_batch_of_calls_writes_every_row_once_through_the_background_writer(client, upstream, production_timing):
    upstream.reply = json_reply({"ok": True, "usage": USAGE})
    route = make_route(upstream.url)
    _, secret = make_key(routes=[route])
    with override_settings(GATEWAY_LOG_BATCH_SIZE=7):  # several batches
        sent = [f"batch-{n}" for n in range(40)]
        assert {status(client, secret, request_id) for request_id in sent} == {200}
        # Nobody calls flush() before the writer thread has written them all, in batches.
        assert written_by_the_writer()
    assert sorted(RequestLog.objects.values_list("request_id", flat=True)) == sorted(sent)
    assert recording.pending() == 0
    assert sum(RequestLog.objects.values_list("total_tokens", flat=True)) == 7 * len(sent)
    assert rollup_check.mismatches() == []


def test_a_row_is_queued_by_its_call_and_written_by_the_writer(client, upstream, production_timing):
    """With a flush interval the call only queues its row (it never waits for the database); the
    row reaches the database without anyone calling flush()."""
    route = make_route(upstream.url)
    _, secret = make_key(routes=[route])
    assert status(client, secret, "queued") == 200
    assert written_by_the_writer()
    assert RequestLog.objects.get().request_id == "queued"


@pytest.mark.slow  # watches the writer for a real 1.5 s
def test_an_idle_writer_does_not_spin_when_calls_write_their_own_rows(db, settings, monkeypatch):
    """GATEWAY_LOG_FLUSH_SECONDS=0 (calls write their own rows) with the writer running, as in a
    gunicorn worker (gunicorn.conf.py starts it to replay the spool): it wakes about once a second,
    not in a loop that takes a whole core."""
    settings.GATEWAY_LOG_FLUSH_SECONDS = 0
    flushes = []
    flush = recording.flush
    monkeypatch.setattr(recording, "flush", lambda *args: flushes.append(1) or flush(*args))
    recording.start()
    time.sleep(1.5)
    assert len(flushes) <= 3
