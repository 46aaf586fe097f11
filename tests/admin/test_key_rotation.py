"""A rotated key gets a new secret; the old one works for its grace period only.

In one process here; across two gunicorn workers at the end of the file (on Redis when REDIS_URL
is set; the configuration generation that tells workers to reload is in the database either way).
"""

import time
from datetime import timedelta
from io import StringIO

import pytest
import requests
from django.core.management import CommandError, call_command

from routes_admin import keys
from routes_admin.models import APIKey, RequestLog
from tests.factories import auth, make_key, make_route
from tests.upstream import json_reply

pytestmark = pytest.mark.django_db


@pytest.fixture
def route(upstream):
    upstream.reply = json_reply({"ok": True, "usage": {"prompt_tokens": 1, "completion_tokens": 1}})
    return make_route(upstream.url)


def call(client, secret: str):
    response = client.post("/v1/chat/completions", b"{}", content_type="application/json", **auth(secret))
    if response.streaming:
        b"".join(response.streaming_content)
    return response


def test_rotation_without_grace_refuses_the_old_secret_at_once(client, route):
    key, old = make_key(routes=[route], requests_per_day=100)
    assert call(client, old).status_code == 200
    new = key.rotate()
    assert new != old and new.startswith(f"gw_{key.prefix}_")
    refused = call(client, old)
    assert refused.status_code == 401
    assert refused.json()["error"]["message"] == "The API key has been rotated; use its new secret."
    row = RequestLog.objects.get(status=401)  # logged like every call, with whose key and why
    assert (row.api_key_id, row.detail["auth"]) == (key.id, "rotated")
    assert call(client, new).status_code == 200


def test_rotation_keeps_the_key_its_limits_and_its_usage(client, route):
    key, old = make_key(routes=[route], requests_per_day=100)
    call(client, old)
    new = key.rotate()
    call(client, new)
    key.refresh_from_db()
    assert key.hashed_secret == keys.hash_key(new)  # only the hash is stored
    assert key.requests_per_day == 100 and list(key.routes.all()) == [route]
    # The calls before and after are the same key's.
    assert list(RequestLog.objects.values_list("api_key_id", "status")) == [(key.id, 200), (key.id, 200)]


@pytest.mark.slow  # waits out a real 1 s grace period
def test_the_old_secret_works_during_its_grace_period_and_is_refused_after(client, route):
    key, old = make_key(routes=[route], requests_per_day=3)
    new = key.rotate(grace=timedelta(seconds=1))
    assert call(client, old).status_code == 200
    assert call(client, new).status_code == 200
    # Both secrets count against the same key's limit (3 a day).
    assert call(client, old).status_code == 200
    assert call(client, new).status_code == 429
    time.sleep(1.1)
    assert call(client, old).status_code == 401
    assert call(client, new).status_code == 429  # still the key's exhausted window: same key
    assert set(RequestLog.objects.exclude(status=401).values_list("api_key_id", flat=True)) == {key.id}


def test_a_second_rotation_ends_the_first_grace_at_once(client, route):
    key, first = make_key(routes=[route])
    second = key.rotate(grace=timedelta(hours=1))
    third = key.rotate(grace=timedelta(hours=1))
    assert call(client, first).status_code == 401
    assert call(client, second).status_code == 200
    assert call(client, third).status_code == 200


def test_for_secret_follows_the_grace_period():
    key, old = APIKey.objects.issue(name="k")
    new = key.rotate(grace=timedelta(hours=1))
    assert APIKey.objects.for_secret(old) == key
    assert APIKey.objects.for_secret(new) == key
    APIKey.objects.filter(pk=key.pk).update(previous_expires=key.previous_expires - timedelta(hours=2))
    assert APIKey.objects.for_secret(old) is None
    assert APIKey.objects.for_secret(new) == key


def test_rotate_key_command_prints_the_new_secret_once(client, route):
    key, old = make_key(routes=[route])
    out = StringIO()
    call_command("rotate_key", f"gw_{key.prefix}_…", "--grace-seconds", "3600", stdout=out)
    new = out.getvalue().strip().splitlines()[-1]
    assert "The old secret works until" in out.getvalue()
    key.refresh_from_db()
    assert key.hashed_secret == keys.hash_key(new)
    assert call(client, old).status_code == 200 and call(client, new).status_code == 200
    with pytest.raises(CommandError, match="No key"):
        call_command("rotate_key", "00000000", stdout=StringIO())


def test_revoke_refuses_both_secrets(client, route):
    key, old = make_key(routes=[route])
    new = key.rotate(grace=timedelta(hours=1))
    key.revoke()
    assert call(client, old).status_code == 401
    assert call(client, new).json()["error"]["message"] == "The API key has been revoked."


def post(url: str, secret: str) -> int:
    return requests.post(
        f"{url}/v1/chat/completions", json={}, headers={"Authorization": f"Bearer {secret}"}
    ).status_code


def wait_until_refused(url: str, secret: str, within: float) -> float:
    """Seconds until `secret` is refused on every worker (a few calls hit each of the 2 workers)."""
    start = time.monotonic()
    while time.monotonic() - start < within:
        if all(post(url, secret) == 401 for _ in range(6)):
            return time.monotonic() - start
        time.sleep(0.05)
    raise AssertionError(f"the old secret was still accepted {within} s after its grace ended")


def rotate_in(cluster, grace_seconds: float) -> tuple[str, float]:
    """The new secret, and when the old one's grace ends (Unix time)."""
    secret, ends = cluster.shell(
        "from datetime import timedelta\nfrom routes_admin.models import APIKey\n"
        "key = APIKey.objects.get()\n"
        f"print(key.rotate(grace=timedelta(seconds={grace_seconds})), key.previous_expires.timestamp())"
    ).split()
    return secret, float(ends)


@pytest.mark.slow
def test_rotation_across_two_workers_without_and_with_grace(cluster, upstream):
    upstream.reply = lambda handler: handler.send_json(200, {"ok": True})
    first = cluster.route_and_key(upstream.url)
    gateway = cluster.start(workers=2)  # GATEWAY_CONFIG_TTL 0.2 s in the cluster
    # Every worker has the key in its snapshot before the rotation.
    assert [post(gateway.url, first) for _ in range(8)] == [200] * 8

    second, _ = rotate_in(cluster, 0)
    wait_until_refused(gateway.url, first, within=2.0)  # the reload time, with room for a busy machine
    assert [post(gateway.url, second) for _ in range(8)] == [200] * 8

    third, grace_ends = rotate_in(cluster, 5)
    # During the grace period both secrets work on every worker.
    checked = 0
    while time.time() < grace_ends - 1:
        assert post(gateway.url, second) == 200
        assert post(gateway.url, third) == 200
        checked += 1
        time.sleep(0.1)
    assert checked >= 4
    time.sleep(max(0.0, grace_ends - time.time()))
    wait_until_refused(gateway.url, second, within=1.0)
    assert [post(gateway.url, third) for _ in range(8)] == [200] * 8
