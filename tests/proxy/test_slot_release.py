"""A worker killed mid-call frees its concurrency slots as soon as the gunicorn master sees it
die (gunicorn.conf.py child_exit), not GATEWAY_INFLIGHT_TTL later. Redis only: without it the
slots live in the worker's memory and die with it."""

import os
import signal
import threading
import time

import pytest
import requests

from tests.servers import workers_of
from tests.upstream import sse_reply

pytestmark = pytest.mark.skipif(not os.environ.get("REDIS_URL"), reason="slots shared between processes: Redis")


def test_a_killed_workers_slots_are_free_once_the_master_sees_it_die(cluster, upstream):
    upstream.reply = sse_reply([{"n": i} for i in range(40)], interval=0.25)  # a 10 s stream
    secret = cluster.route_and_key(upstream.url, key_fields="max_concurrent=1")
    gateway = cluster.start(workers=1)  # GATEWAY_INFLIGHT_TTL: the default 600 s
    url, headers = f"{gateway.url}/v1/chat/completions", {"Authorization": f"Bearer {secret}"}
    started = threading.Event()

    def holding_call():
        try:
            with requests.post(url, json={"stream": True}, headers=headers, stream=True, timeout=30) as response:
                for _ in response.iter_lines():
                    started.set()
        except requests.RequestException:  # its worker is killed under it
            pass

    holder = threading.Thread(target=holding_call)
    holder.start()
    assert started.wait(15)
    assert requests.post(url, json={}, headers=headers, timeout=10).status_code == 429  # the one slot is taken
    [worker] = workers_of(gateway.pid)
    os.kill(worker, signal.SIGKILL)
    holder.join(30)
    statuses = []
    deadline = time.monotonic() + 20  # a new worker boots; a bound, not a measurement
    while time.monotonic() < deadline:
        try:
            statuses.append(requests.post(url, json={}, headers=headers, timeout=10).status_code)
        except requests.ConnectionError:
            statuses.append("no worker yet")
        if statuses[-1] != "no worker yet" and statuses[-1] != 503:
            break
        time.sleep(0.2)
    assert statuses[-1] == 200, statuses
    assert "released 1 concurrency slot(s)" in gateway.log()
