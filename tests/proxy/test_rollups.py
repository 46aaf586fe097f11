"""Rollups written with the log rows equal the log, and outlive it."""

import json
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from io import StringIO

import pytest
import requests
from django.core.management import call_command
from django.test import override_settings
from django.utils import timezone

from proxy import recording, rollups
from routes_admin.models import LATENCY_BUCKETS, RequestLog, UsageRollup
from tests import rollup_check
from tests.factories import auth, make_key, make_route
from tests.upstream import json_reply

pytestmark = pytest.mark.django_db
USAGE = {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}


def call(client, secret="", model="demo-chat", path="/v1/chat/completions"):
    headers = auth(secret) if secret else {}
    response = client.post(path, json.dumps({"model": model}), content_type="application/json", **headers)
    b"".join(response.streaming_content) if response.streaming else response.content
    return response.status_code


def burst(client, secret, n=12):
    statuses = []
    for i in range(n):
        statuses.append(call(client, secret, model=("demo-chat", "demo-embed")[i % 2]))
    statuses.append(call(client))  # 401
    statuses.append(call(client, secret, path="/nowhere"))  # 404
    return statuses


@pytest.fixture
def batched(fresh_runtime):
    """Rows queued as in production (written in batches by flush()), by a writer with no thread."""
    fresh_runtime.log_writer = recording.LogWriter(background=False)
    with override_settings(GATEWAY_LOG_FLUSH_SECONDS=60, GATEWAY_LOG_BATCH_SIZE=5):
        yield fresh_runtime.log_writer


def test_rollups_equal_the_log_after_a_burst_and_a_new_writer(client, upstream, batched, fresh_runtime):
    answers = iter([200, 200, 500] * 20)
    upstream.reply = lambda handler: handler.send_json(next(answers), {"usage": USAGE})
    route = make_route(upstream.url, name="chat", retry_statuses="")
    _, secret = make_key(routes=[route])

    statuses = burst(client, secret)
    recording.flush()
    # A new writer (as after a restart) adds to the same minute's groups, never replaces them.
    fresh_runtime.log_writer = recording.LogWriter(background=False)
    statuses += burst(client, secret)
    recording.flush()

    assert {200, 500, 401, 404} <= set(statuses)
    assert RequestLog.objects.count() == len(statuses)
    assert rollup_check.mismatches() == []
    minute = UsageRollup.objects.filter(period="minute", dimension="all")
    assert sum(r.calls for r in minute) == len(statuses)
    assert sum(r.total_tokens for r in minute) == 7 * statuses.count(200) + 7 * statuses.count(500)
    models = UsageRollup.objects.filter(period="minute", dimension="model")
    assert {r.value for r in models} == {"demo-chat", "demo-embed", ""}


def test_a_batch_sums_each_group_once_and_buckets_latency():
    created = timezone.now().replace(second=30)
    row = dict(created=created, key_prefix="abcd1234", route_name="chat", model="m", status=200, error_type="")
    row.update(prompt_tokens=1, completion_tokens=2, total_tokens=3, upstream_model="m", team_name="", cost=None)
    rows = [dict(row, latency_ms=ms) for ms in (0.5, 1.0, 1.2, 150.0, 500_000.0)]
    rows.append(dict(row, status=504, error_type="upstream_timeout", latency_ms=5000.0, total_tokens=None))
    rollups.add(rows)
    ok = UsageRollup.objects.get(period="minute", dimension="key", status_class=2)
    assert ok.value == "abcd1234"
    assert (ok.calls, ok.errors, ok.total_tokens, ok.latency_sum_ms) == (5, 0, 15, 500_152.7)
    counts = {name: getattr(ok, name) for name in LATENCY_BUCKETS if getattr(ok, name)}
    # <= 1 ms twice, <= 2 ms, <= 150 ms, and past the last edge
    assert counts == {"latency_le_0": 2, "latency_le_1": 1, "latency_le_12": 1, LATENCY_BUCKETS[-1]: 1}
    failed = UsageRollup.objects.get(period="day", dimension="all", status_class=5)
    assert (failed.calls, failed.errors, failed.total_tokens) == (1, 1, 0)
    assert failed.start == created.replace(hour=0, minute=0, second=0, microsecond=0)
    # minute, hour and day; all, key, route, model and team; 2xx and 5xx
    assert UsageRollup.objects.count() == 3 * 5 * 2


def test_a_failed_batch_leaves_no_rollup(client, upstream, batched):
    upstream.reply = json_reply({"usage": USAGE})
    route = make_route(upstream.url, name="chat")
    _, secret = make_key(routes=[route])
    call(client, secret)
    assert batched.pending() == 1
    batched.pending_rows[0]["bytes_out"] = 2**80  # a value the database refuses: its row is dropped
    assert recording.flush() == 0
    assert UsageRollup.objects.count() == 0  # the row was not saved: neither are its sums


def make_old_rows(days: int, count: int = 5):
    created = timezone.now() - timedelta(days=days)
    rows = [
        dict(
            created=created,
            request_id=f"old-{days}-{i}",
            key_prefix="k",
            route_name="chat",
            model="m",
            method="POST",
            path="/v1/x",
            status=200,
            latency_ms=10.0,
            error_type="",
            prompt_tokens=None,
            completion_tokens=None,
            total_tokens=2,
        )
        for i in range(count)
    ]
    RequestLog.objects.bulk_create(RequestLog(**row) for row in rows)
    rollups.add(rows)


def test_pruning_the_log_keeps_the_rollups():
    make_old_rows(40)
    make_old_rows(1)
    before = rollup_check.from_rollups()
    call_command("prune_logs", "--older-than", "30", stdout=StringIO())
    assert RequestLog.objects.count() == 5
    assert rollup_check.from_rollups() == before
    assert sum(r.calls for r in UsageRollup.objects.filter(period="day", dimension="all")) == 10


def test_prune_rollups_drops_old_minute_and_hour_rollups_and_keeps_days():
    make_old_rows(40)
    make_old_rows(1)
    out = StringIO()
    call_command("prune_rollups", stdout=out)  # defaults: minutes 8 days, hours 90 days, days kept
    assert set(UsageRollup.objects.values_list("period", flat=True).distinct()) == {"minute", "hour", "day"}
    old = UsageRollup.objects.filter(start__lt=timezone.now() - timedelta(days=30))
    assert set(old.values_list("period", flat=True)) == {"hour", "day"}
    call_command("prune_rollups", "--hours-days", "30", "--days-days", "35", stdout=out)
    assert not UsageRollup.objects.filter(start__lt=timezone.now() - timedelta(days=30)).exists()
    assert "Deleted" in out.getvalue()


def test_rollups_equal_the_log_across_two_workers_and_a_restart(cluster, upstream):
    upstream.reply = json_reply({"usage": USAGE})
    secret = cluster.route_and_key(upstream.url, name="chat")

    def send(gateway, n):
        def one(i):
            body = {"model": ("a", "b", "c")[i % 3]}
            headers = {"Authorization": f"Bearer {secret}"} if i % 7 else {}
            return requests.post(
                f"{gateway.url}/v1/chat/completions", json=body, headers=headers, timeout=10
            ).status_code

        with ThreadPoolExecutor(16) as pool:
            return list(pool.map(one, range(n)))

    gateway = cluster.start(workers=2)
    statuses = send(gateway, 120)
    gateway.stop()  # graceful: the workers write what they queued
    gateway = cluster.start(workers=2)
    statuses += send(gateway, 120)
    gateway.stop()

    assert set(statuses) == {200, 401}
    out = cluster.shell(
        "import json\nfrom tests import rollup_check\nfrom routes_admin.models import RequestLog\n"
        "print(json.dumps([RequestLog.objects.count(), len(rollup_check.from_log()), repr(rollup_check.mismatches())]))"
    )
    rows, groups, mismatches = json.loads(out)
    assert rows == 240 and groups >= 3 * 4  # minute, hour, day x (at least) models a, b, c and none
    assert mismatches == "[]"


def test_percentiles_from_the_histogram_are_within_one_bucket():
    from console.figures import percentile

    counts = [0] * len(LATENCY_BUCKETS)
    counts[11] = 100  # 70 ms < latency <= 100 ms
    assert percentile(counts, 0.5) == 85.0
    assert 70 < percentile(counts, 0.99) <= 100
    counts[-1] = 100  # half the calls slower than the last edge (120 s)
    assert percentile(counts, 0.99) == 120_000
    assert percentile([0] * len(LATENCY_BUCKETS), 0.5) is None
