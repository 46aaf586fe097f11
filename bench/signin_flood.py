"""A proxied call's latency while admin sign-ins flood the same worker.

.venv/bin/python bench/signin_flood.py   (knobs: FLOOD_CLIENTS 4, FLOOD_SECONDS 10)

Starts one real gunicorn worker (tests/servers.py: the production config) and a local upstream,
then measures calls through the gateway, first alone and then while FLOOD_CLIENTS threads keep
signing in to /admin/ with the right password (each sign-in hashes it: PBKDF2, 1,000,000
iterations). Prints p50 / p99 / max of both. It measures; it asserts nothing.
"""

import os
import re
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.servers import GatewayCluster  # noqa: E402
from tests.upstream import UpstreamServer, json_reply  # noqa: E402

CLIENTS = int(os.environ.get("FLOOD_CLIENTS", "4"))
SECONDS = float(os.environ.get("FLOOD_SECONDS", "10"))
PASSWORD = "flood-test-password-1"


def sign_in_forever(base: str, stop: threading.Event, count: list) -> None:
    while not stop.is_set():
        session = requests.Session()
        page = session.get(f"{base}/admin/login/", timeout=30)
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
        answer = session.post(
            f"{base}/admin/login/",
            data={"csrfmiddlewaretoken": token, "username": "admin", "password": PASSWORD, "next": "/admin/"},
            headers={"Referer": f"{base}/admin/login/"},
            timeout=30,
            allow_redirects=False,
        )
        count.append(answer.status_code)


def call_latencies(base: str, key: str, seconds: float) -> list[float]:
    session = requests.Session()
    latencies = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        start = time.perf_counter()
        answer = session.post(f"{base}/v1/chat", json={"x": 1}, headers={"Authorization": f"Bearer {key}"}, timeout=30)
        latencies.append((time.perf_counter() - start) * 1000)
        assert answer.status_code == 200, answer.text
        time.sleep(0.05)
    return latencies


def summary(latencies: list[float]) -> str:
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return f"{len(ordered)} calls, p50 {statistics.median(ordered):.1f} ms, p99 {p99:.1f} ms, max {ordered[-1]:.1f} ms"


def main() -> None:
    upstream = UpstreamServer()
    upstream.reply = json_reply({"ok": True})
    with tempfile.TemporaryDirectory() as tmp:
        cluster = GatewayCluster(Path(tmp))
        try:
            key = cluster.route_and_key(upstream.url)
            cluster.shell(
                "from django.contrib.auth.models import User\n"
                f"User.objects.create_superuser('admin', 'a@example.com', {PASSWORD!r})"
            )
            gateway = cluster.start(workers=1)
            call_latencies(gateway.url, key, 1)  # warm up
            quiet = call_latencies(gateway.url, key, SECONDS)
            stop, signed_in = threading.Event(), []
            flooders = [
                threading.Thread(target=sign_in_forever, args=(gateway.url, stop, signed_in)) for _ in range(CLIENTS)
            ]
            for thread in flooders:
                thread.start()
            time.sleep(1)
            flooded = call_latencies(gateway.url, key, SECONDS)
            stop.set()
            for thread in flooders:
                thread.join()
            print(f"alone:                      {summary(quiet)}")
            print(f"during {CLIENTS} sign-in clients:   {summary(flooded)}")
            print(f"sign-ins answered: {len(signed_in)} ({sorted(set(signed_in))})")
        finally:
            cluster.close()
            upstream.stop()


if __name__ == "__main__":
    main()
