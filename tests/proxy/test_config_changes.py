"""Configuration changes reach every worker of every instance within GATEWAY_CONFIG_TTL, with or
without Redis, and only once they commit (the ConfigGeneration row, proxy/signals.py)."""

import os
import threading
import time

import psycopg
import pytest
import requests
from django.db import OperationalError

from proxy import config, database
from routes_admin.models import ConfigGeneration
from tests.factories import auth, make_key, make_route
from tests.upstream import json_reply

on_postgres = pytest.mark.skipif(
    not os.environ.get("DATABASE_URL", "").startswith("postgres"),
    reason="takes a PostgreSQL database away from a running server: set DATABASE_URL=postgres://... to run this",
)


def post(gateway, secret: str, path: str = "/v1/chat/completions") -> int:
    headers = {"Authorization": f"Bearer {secret}"}
    return requests.post(gateway.url + path, json={}, headers=headers, timeout=5).status_code


def wait_for(status: int, gateway, secret: str, path: str = "/v1/chat/completions", timeout: float = 10) -> int:
    """Poll until the gateway answers `status` (or the bounded deadline passes); returns the last status."""
    deadline = time.monotonic() + timeout
    found = post(gateway, secret, path)
    while found != status and time.monotonic() < deadline:
        time.sleep(0.1)
        found = post(gateway, secret, path)
    return found


def test_a_change_saved_by_another_process_reaches_every_worker(cluster, upstream):
    upstream.reply = json_reply({"ok": True})
    secret = cluster.route_and_key(upstream.url)
    gateway = cluster.start(workers=2, GATEWAY_CONFIG_TTL=1)
    assert post(gateway, secret) == 200
    assert post(gateway, secret, "/v2/embeddings") == 404

    # A separate OS process (a shell, a command, another instance) adds a route and revokes the key.
    cluster.shell(
        "from routes_admin.models import Route, UpstreamTarget\n"
        "route = Route.objects.create(name='second', path_prefix='/v2')\n"
        f"UpstreamTarget.objects.create(route=route, url='{upstream.url}')\n"
    )
    assert wait_for(200, gateway, secret, "/v2/embeddings") == 200
    cluster.shell(
        "from django.utils import timezone\nfrom routes_admin.models import APIKey\n"
        "key = APIKey.objects.get()\nkey.revoked = timezone.now()\nkey.save()\n"
    )
    assert wait_for(401, gateway, secret) == 401
    # One worker has seen it; the other checks within GATEWAY_CONFIG_TTL of its last check.
    time.sleep(1.1)
    assert [post(gateway, secret) for _ in range(10)] == [401] * 10  # whichever worker answers


def test_a_change_is_announced_only_after_it_commits(cluster, upstream, tmp_path):
    upstream.reply = json_reply({"ok": True})
    secret = cluster.route_and_key(upstream.url)
    # No log rows written meanwhile: on SQLite they would wait for the open transaction's lock.
    gateway = cluster.start(GATEWAY_CONFIG_TTL=0.2, GATEWAY_LOG_FLUSH_SECONDS=60)
    assert post(gateway, secret) == 200
    saved, go = tmp_path / "saved", tmp_path / "go"
    held = threading.Thread(
        target=cluster.shell,
        args=(
            "import time\nfrom pathlib import Path\nfrom django.db import transaction\n"
            "from routes_admin.models import APIKey\n"
            "with transaction.atomic():\n"
            "    key = APIKey.objects.get()\n"
            "    key.enabled = False\n"
            "    key.save()\n"
            f"    Path('{saved}').touch()\n"
            "    deadline = time.monotonic() + 30\n"
            f"    while not Path('{go}').exists() and time.monotonic() < deadline:\n"
            "        time.sleep(0.05)\n",
        ),
    )
    held.start()
    try:
        deadline = time.monotonic() + 30
        while not saved.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert saved.exists()
        # Saved, not committed: the gateway checks for changes meanwhile and keeps serving the key.
        for _ in range(5):
            time.sleep(0.2)
            assert post(gateway, secret) == 200
    finally:
        go.touch()
        held.join(60)
    assert wait_for(401, gateway, secret, timeout=5) == 401  # committed: announced, and seen


@on_postgres
def test_known_keys_are_served_while_the_database_is_down(cluster, upstream):
    upstream.reply = json_reply({"ok": True})
    known = cluster.route_and_key(upstream.url)
    new = cluster.shell(
        "from routes_admin.models import APIKey\n_, secret = APIKey.objects.issue(name='new', all_routes=True)\n"
        "print(secret)"
    ).strip()
    gateway = cluster.start(GATEWAY_CONFIG_TTL=0.2, DATABASE_POOL_TIMEOUT=10)
    assert post(gateway, known) == 200
    assert requests.get(gateway.url + "/readyz", timeout=5).json()["checks"]["config"] == "ok"

    with psycopg.connect(cluster._pg_admin_url, autocommit=True) as admin:
        name = cluster.database_name
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", [name])
        try:
            time.sleep(0.5)  # past the TTL: the next call checks and finds the database gone
            # Each answer within the client's 5 s timeout: no call waits for the pool's 10 s.
            assert [post(gateway, known) for _ in range(5)] == [200] * 5
            refused = requests.post(
                gateway.url + "/v1/chat/completions", json={}, headers={"Authorization": f"Bearer {new}"}, timeout=5
            )
            assert refused.status_code == 503
            assert refused.json()["error"]["type"] == "service_unavailable"
            ready = requests.get(gateway.url + "/readyz", timeout=5)
            assert ready.status_code == 200
            assert ready.json()["status"] == "degraded"
            assert ready.json()["checks"]["database"] == "unreachable"
            assert ready.json()["checks"]["config"].startswith("stale since ")
        finally:
            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')

    assert wait_for(200, gateway, new, timeout=15) == 200  # the pool reconnects; new keys work again
    assert requests.get(gateway.url + "/readyz", timeout=5).json()["checks"]["config"] == "ok"


@pytest.mark.django_db
def test_a_process_that_cannot_reach_its_database_serves_known_keys_only(client, upstream, monkeypatch):
    upstream.reply = json_reply({"ok": True})
    route = make_route(upstream.url)
    _, known = make_key(routes=[route])
    _, new = make_key(routes=[route])
    assert client.post("/v1/x", **auth(known)).status_code == 200

    def unreachable(timeout):
        raise OperationalError("no database connection within 1 s")

    monkeypatch.setattr(database, "connect", unreachable)  # what the pool answers when PostgreSQL is down
    assert client.post("/v1/x", **auth(known)).status_code == 200
    refused = client.post("/v1/x", **auth(new))
    assert refused.status_code == 503
    assert refused.json()["error"]["type"] == "service_unavailable"
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"]["config"].startswith("stale since ")

    monkeypatch.undo()
    assert client.post("/v1/x", **auth(new)).status_code == 200
    assert client.get("/readyz").json()["checks"]["config"] == "ok"
    # The refused call's row met the same outage in the writer: what the batched writer does with
    # such rows (kept, spooled at a stop, written once the database answers) is tests/test_log_spool.py's.


@pytest.mark.django_db(transaction=True)
def test_the_generation_moves_only_when_the_change_commits(upstream):
    from django.db import transaction

    route = make_route(upstream.url)
    before = ConfigGeneration.objects.current()
    with transaction.atomic():
        route.priority = 5
        route.save()
        assert ConfigGeneration.objects.current() == before  # not announced inside the transaction
    assert ConfigGeneration.objects.current() > before
    assert config.current().generation == ConfigGeneration.objects.current()
