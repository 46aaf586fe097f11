"""Graceful shutdown and worker restarts: calls in flight finish and every call keeps its log row.

Log rows are batched in memory (proxy/recording.py); these servers flush only every 60 s, so
every row found here was written by the shutdown path itself: the writer, woken for each row once
the worker is stopping, and gunicorn's worker_exit hook.
"""

import json
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import requests

from tests.upstream import sse_reply

EVENTS = 10


def setup(cluster, upstream) -> str:
    return cluster.route_and_key(upstream.url, name="slow")


def rows(cluster) -> dict:
    """request id -> (status, error type, bytes out) of every RequestLog row."""
    out = cluster.shell(
        "import json\nfrom routes_admin.models import RequestLog\n"
        "print(json.dumps({r.request_id: [r.status, r.error_type, r.bytes_out] for r in RequestLog.objects.all()}))"
    )
    return json.loads(out)


def slow_upstream(upstream):
    def reply(handler):
        if handler.received.body and json.loads(handler.received.body).get("stream"):
            sse_reply([{"n": i} for i in range(EVENTS)], interval=0.2)(handler)  # a 2 s stream
        else:
            time.sleep(1.5)
            handler.send_json(200, {"ok": True, "usage": {"prompt_tokens": 1, "completion_tokens": 1}})

    upstream.reply = reply


def test_sigterm_lets_calls_and_streams_in_flight_finish_and_log(cluster, upstream):
    slow_upstream(upstream)
    secret = setup(cluster, upstream)
    gateway = cluster.start(workers=2, GATEWAY_LOG_FLUSH_SECONDS=60, GATEWAY_GRACEFUL_TIMEOUT=20)
    url = f"{gateway.url}/v1/chat/completions"
    streams_started = threading.Barrier(5 + 1)

    def plain(i):
        response = requests.post(
            url, json={}, headers={"Authorization": f"Bearer {secret}", "X-Request-ID": f"plain-{i}"}, timeout=30
        )
        return response.status_code, response.json()

    def stream(i):
        with requests.post(
            url,
            json={"stream": True},
            stream=True,
            timeout=30,
            headers={"Authorization": f"Bearer {secret}", "X-Request-ID": f"stream-{i}"},
        ) as response:
            chunks = response.iter_lines()
            first = next(chunks)
            streams_started.wait(10)
            events = [first, *chunks]
        return response.status_code, [line for line in events if line.startswith(b"data:")]

    with ThreadPoolExecutor(12) as pool:
        plains = [pool.submit(plain, i) for i in range(6)]
        streams = [pool.submit(stream, i) for i in range(5)]
        streams_started.wait(10)  # every stream has its first event; the plain calls wait upstream
        deadline = time.monotonic() + 5
        while len(upstream.requests) < 11 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(upstream.requests) == 11
        gateway.process.send_signal(signal.SIGTERM)
        plain_results = [f.result() for f in plains]
        stream_results = [f.result() for f in streams]

    assert gateway.process.wait(30) == 0
    assert plain_results == [(200, {"ok": True, "usage": {"prompt_tokens": 1, "completion_tokens": 1}})] * 6
    for status, events in stream_results:
        assert status == 200
        assert len(events) == EVENTS  # the whole stream, not cut at SIGTERM
    logged = rows(cluster)
    assert set(logged) == {f"plain-{i}" for i in range(6)} | {f"stream-{i}" for i in range(5)}
    assert all(status == 200 and error == "" and size > 0 for status, error, size in logged.values())


def test_worker_restarts_lose_no_log_row(cluster, upstream):
    upstream.reply = lambda handler: handler.send_json(200, {"ok": True})
    secret = setup(cluster, upstream)
    # Each worker restarts after 5 calls; rows queued in a retiring worker are written on its way out.
    gateway = cluster.start(workers=2, GATEWAY_LOG_FLUSH_SECONDS=60, GATEWAY_MAX_REQUESTS=5, GATEWAY_GRACEFUL_TIMEOUT=8)
    url = f"{gateway.url}/v1/chat/completions"
    sent = []
    for i in range(40):
        time.sleep(0.1)  # a retiring gevent worker notices within a second
        request_id = f"restart-{i}"
        try:
            response = requests.post(
                url, json={}, headers={"Authorization": f"Bearer {secret}", "X-Request-ID": request_id}, timeout=10
            )
            assert response.status_code == 200
            sent.append(request_id)
        except requests.ConnectionError:  # a retiring worker may close a keep-alive socket; not a call
            pass
    assert len(sent) >= 35
    assert gateway.stop() == 0
    assert gateway.log().count("Booting worker") >= 4  # the workers did restart
    assert set(rows(cluster)) == set(sent), gateway.log()


def test_idle_keep_alive_connections_do_not_hold_a_stopping_worker(cluster, upstream):
    """SDKs keep their connection open between calls; a stopping worker closes it rather than
    waiting for it until the graceful timeout, when it would be killed with its queued rows."""
    upstream.reply = lambda handler: handler.send_json(200, {"ok": True})
    secret = setup(cluster, upstream)
    gateway = cluster.start(GATEWAY_LOG_FLUSH_SECONDS=60, GATEWAY_GRACEFUL_TIMEOUT=15)
    with requests.Session() as client:  # like an SDK: one pooled keep-alive connection
        headers = {"Authorization": f"Bearer {secret}", "X-Request-ID": "kept-alive"}
        response = client.post(f"{gateway.url}/v1/chat/completions", json={}, headers=headers, timeout=10)
        assert response.status_code == 200
        assert response.headers.get("Connection", "").lower() != "close"  # the connection stays open
        gateway.process.send_signal(signal.SIGTERM)
        assert gateway.process.wait(30) == 0
        log = gateway.log()
        assert "Worker exiting" in log and "SIGKILL" not in log and "graceful timeout" not in log, log
        # The closed connection is no error for the client: its pool opens a new one next time.
    assert set(rows(cluster)) == {"kept-alive"}
