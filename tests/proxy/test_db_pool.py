"""A long stream must not hold a database connection: with PostgreSQL's bounded pool, a few
streams would otherwise take every connection and the next calls would fail."""

import os
import threading

import pytest
import requests

from tests.upstream import sse_reply

pytestmark = pytest.mark.skipif(
    not os.environ.get("DATABASE_URL", "").startswith("postgres"),
    reason="the connection pool exists with PostgreSQL only: set DATABASE_URL=postgres://... to run this",
)


def test_a_call_gets_a_connection_while_a_stream_holds_the_only_one_it_used(cluster, upstream):
    def reply(handler):
        if b"stream" in handler.received.body:
            sse_reply([{"n": i} for i in range(15)], interval=0.2)(handler)  # a 3 s stream
        else:
            handler.send_json(200, {"ok": True})

    upstream.reply = reply
    secrets = cluster.shell(
        "from routes_admin.models import APIKey, Route, UpstreamTarget\n"
        "route = Route.objects.create(name='r', path_prefix='/v1')\n"
        f"UpstreamTarget.objects.create(route=route, url='{upstream.url}')\n"
        "_, first = APIKey.objects.issue(name='first', all_routes=True)\n"
        "_, second = APIKey.objects.issue(name='second', all_routes=True)\n"
        "print(first, second)"
    ).split()
    gateway = cluster.start(DATABASE_POOL_MIN=1, DATABASE_POOL_MAX=1, DATABASE_POOL_TIMEOUT=2)
    url = f"{gateway.url}/v1/chat/completions"
    streaming = threading.Event()
    events = []

    def stream():
        # The first key is looked up in the database: this call uses the pool's one connection.
        with requests.post(
            url, json={"stream": True}, headers={"Authorization": f"Bearer {secrets[0]}"}, stream=True, timeout=20
        ) as response:
            for line in response.iter_lines():
                streaming.set()
                events.append(line)

    thread = threading.Thread(target=stream)
    thread.start()
    assert streaming.wait(5)
    # The second key is not cached yet either: it needs the connection while the stream runs.
    second = requests.post(url, json={}, headers={"Authorization": f"Bearer {secrets[1]}"}, timeout=20)
    still_streaming = thread.is_alive()
    thread.join(20)
    assert still_streaming
    assert second.status_code == 200, second.text
    assert len([line for line in events if line.startswith(b"data:")]) == 15
