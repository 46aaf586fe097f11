"""Circuit breaker: K failures within the window open it, the target is skipped for the cooldown,
then one probe call decides. State is in the cache, so every worker agrees."""

import os
import time

import pytest
import requests
from django.test import override_settings

from proxy import breaker
from routes_admin.models import RequestLog
from tests.factories import auth, make_key, make_plan, make_route, make_target
from tests.upstream import json_reply, refused_url

pytestmark = pytest.mark.django_db
FAST_BREAKER = {"GATEWAY_BREAKER_FAILURES": 2, "GATEWAY_BREAKER_WINDOW": 10, "GATEWAY_BREAKER_COOLDOWN": 1}
OK = json_reply({"ok": True})
BUSY = json_reply({"error": "busy"}, status=503)


def call(client, secret):
    response = client.get("/v1/models", **auth(secret))
    if response.streaming:
        b"".join(response.streaming_content)
    return response, RequestLog.objects.latest("id")


@pytest.fixture(params=["no plan", "token plan"])
def pair(request, servers):
    """A failover route: `flaky` first, then `steady`. With a token plan the breaker states are
    read in the same round trip as the token counters (quotas.admit's read_ahead)."""
    flaky, steady = servers(BUSY), servers(OK)
    route = make_route(strategy="failover")
    flaky_target = make_target(route, flaky.url, name="flaky", position=0)
    make_target(route, steady.url, name="steady", position=1)
    plan = make_plan(tokens_per_day=10**9) if request.param == "token plan" else None
    _, secret = make_key(routes=[route], quota_plan=plan)
    return flaky, steady, flaky_target, secret


@override_settings(**FAST_BREAKER)
def test_breaker_opens_skips_probes_and_closes(client, pair, clock):
    flaky, steady, flaky_target, secret = pair

    for _ in range(2):  # two failures: the breaker opens
        response, row = call(client, secret)
        assert response.status_code == 200
        assert row.targets_tried == ["flaky", "steady"]
    assert breaker.describe([flaky_target.id])[flaky_target.id]["state"] == "open"

    for _ in range(3):  # skipped during the cooldown: no time lost on it
        response, row = call(client, secret)
        assert response.status_code == 200
        assert row.targets_tried == ["steady"]
    assert len(flaky.requests) == 2

    flaky.reply = OK  # it recovers
    clock.advance(1.1)  # the cooldown ends
    assert breaker.describe([flaky_target.id])[flaky_target.id]["state"] == "half-open"
    response, row = call(client, secret)  # this call is the probe
    assert row.targets_tried == ["flaky"]
    assert breaker.describe([flaky_target.id])[flaky_target.id]["state"] == "closed"

    response, row = call(client, secret)
    assert row.targets_tried == ["flaky"]  # back to the primary
    assert len(flaky.requests) == 4


@override_settings(**FAST_BREAKER)
def test_failed_probe_opens_the_breaker_for_another_cooldown(client, pair, clock):
    flaky, steady, flaky_target, secret = pair
    for _ in range(2):
        call(client, secret)
    clock.advance(1.1)

    response, row = call(client, secret)  # the probe fails; the call still succeeds elsewhere
    assert response.status_code == 200
    assert row.targets_tried == ["flaky", "steady"]
    assert breaker.describe([flaky_target.id])[flaky_target.id]["state"] == "open"

    response, row = call(client, secret)
    assert row.targets_tried == ["steady"]
    assert len(flaky.requests) == 3


@override_settings(**FAST_BREAKER)
def test_only_one_call_may_probe_a_target_after_its_cooldown(pair, clock):
    _, _, flaky_target, _ = pair
    breaker.record_failure(flaky_target.id, "flaky", probe=False)
    breaker.record_failure(flaky_target.id, "flaky", probe=False)
    state = breaker.states([flaky_target.id])[flaky_target.id]
    assert state.cooling(clock())
    assert not state.cooling(clock() + 1.1)

    assert breaker.claim_probe(flaky_target.id, hold=30) is True
    assert breaker.claim_probe(flaky_target.id, hold=30) is False  # another worker, same moment
    assert breaker.describe([flaky_target.id])[flaky_target.id]["failures"] == 0


@pytest.mark.slow  # waits out a real 1 s window (the cache expires it)
@override_settings(GATEWAY_BREAKER_FAILURES=2, GATEWAY_BREAKER_WINDOW=1, GATEWAY_BREAKER_COOLDOWN=30)
def test_failures_further_apart_than_the_window_do_not_open_it(client, pair):
    flaky, _, flaky_target, secret = pair

    call(client, secret)
    time.sleep(1.2)  # the window (1 s) that started with the first failure is over
    call(client, secret)
    assert breaker.describe([flaky_target.id])[flaky_target.id]["state"] == "closed"

    call(client, secret)  # second failure within the new window
    assert breaker.describe([flaky_target.id])[flaky_target.id]["state"] == "open"


@override_settings(**FAST_BREAKER)
def test_client_errors_do_not_count_as_failures(client, pair):
    flaky, _, flaky_target, secret = pair
    flaky.reply = json_reply({"error": "no such model"}, status=404)

    for _ in range(4):
        response, _ = call(client, secret)
        assert response.status_code == 404

    assert breaker.describe([flaky_target.id])[flaky_target.id]["state"] == "closed"


@override_settings(**FAST_BREAKER)
def test_when_every_breaker_is_open_the_call_fails_fast_with_503(client, servers):
    down = servers(BUSY)
    route = make_route(strategy="failover", max_attempts=1)
    make_target(route, down.url, name="only")
    _, secret = make_key(routes=[route])
    for _ in range(2):
        response, _ = call(client, secret)
        assert response.status_code == 503  # the upstream's own answer

    response, row = call(client, secret)

    assert response.status_code == 503
    error = response.json()["error"]
    assert error["type"] == "upstream_unavailable"
    assert error["request_id"] == response["X-Request-ID"]
    assert response["Retry-After"] == "1"  # the end of the cooldown
    assert len(down.requests) == 2  # the gateway did not wait on a target known to be failing
    assert (row.status, row.attempts, row.targets_tried) == (503, 0, [])


@override_settings(**FAST_BREAKER)
def test_breakers_count_timeouts_and_refused_connections(client, servers):
    steady = servers(OK)
    route = make_route(strategy="failover")
    dead = make_target(route, refused_url(), name="dead", position=0)
    make_target(route, steady.url, name="steady", position=1)
    _, secret = make_key(routes=[route])

    call(client, secret)
    call(client, secret)
    _, row = call(client, secret)

    assert breaker.describe([dead.id])[dead.id]["state"] == "open"
    assert row.targets_tried == ["steady"]


@override_settings(**FAST_BREAKER)
def test_admin_shows_breaker_state_and_resets_it(admin_client, client, pair):
    flaky, _, flaky_target, secret = pair
    for _ in range(2):
        call(client, secret)

    page = admin_client.get("/admin/routes_admin/upstreamtarget/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "Target health (circuit breakers)" in html
    assert '<td class="field-breaker_state">open</td>' in html
    assert '<td class="field-breaker_state">closed</td>' in html  # steady

    response = admin_client.post(
        "/admin/routes_admin/upstreamtarget/",
        {"action": "reset_breakers", "_selected_action": [flaky_target.id]},
        follow=True,
    )
    assert "Reset the breaker of 1 target(s)" in response.content.decode()
    assert breaker.describe([flaky_target.id])[flaky_target.id]["state"] == "closed"
    _, row = call(client, secret)
    assert row.targets_tried[0] == "flaky"  # it takes calls again at once


def test_target_page_sends_editors_to_the_route(admin_client, pair):
    _, _, flaky_target, _ = pair

    response = admin_client.get(f"/admin/routes_admin/upstreamtarget/{flaky_target.id}/change/")

    assert response.status_code == 302
    assert response["Location"] == f"/admin/routes_admin/route/{flaky_target.route_id}/change/"


def test_breaker_state_is_shared_by_real_gateway_servers(cluster, servers):
    """Two gateway instances with Redis (one without it: the cache is per process then)."""
    flaky, steady = servers(BUSY), servers(OK)
    secret = cluster.shell(
        "from routes_admin.models import APIKey, Route, UpstreamTarget\n"
        "route = Route.objects.create(name='r', path_prefix='/v1', strategy='failover')\n"
        f"UpstreamTarget.objects.create(route=route, name='flaky', url='{flaky.url}', position=0)\n"
        f"UpstreamTarget.objects.create(route=route, name='steady', url='{steady.url}', position=1)\n"
        "print(APIKey.objects.issue(name='k', all_routes=True)[1])"
    ).strip()
    settings = {"GATEWAY_BREAKER_FAILURES": 2, "GATEWAY_BREAKER_COOLDOWN": 30, "GATEWAY_EXPOSE_TARGET": 1}
    first = cluster.start(**settings)
    second = cluster.start(**settings) if os.environ.get("REDIS_URL") else first
    headers = {"Authorization": f"Bearer {secret}"}

    for _ in range(2):  # two failures seen by the first instance open the breaker
        response = requests.get(f"{first.url}/v1/models", headers=headers, timeout=5)
        assert (response.status_code, response.headers["X-Gateway-Target"]) == (200, "steady")
    for _ in range(3):  # the second instance skips the target without trying it
        response = requests.get(f"{second.url}/v1/models", headers=headers, timeout=5)
        assert (response.status_code, response.headers["X-Gateway-Target"]) == (200, "steady")

    assert len(flaky.requests) == 2
    assert len(steady.requests) == 5
