"""Load balancing over a route's targets: weighted round-robin, least in-flight, ordered failover."""

import threading
from collections import Counter

import pytest

from proxy import balancing
from proxy.config import RouteInfo, TargetInfo
from routes_admin.models import RequestLog
from tests.factories import auth, make_key, make_route, make_target
from tests.upstream import json_reply, refused_url

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fresh_balancing():
    """Target ids are reused between tests: start from no in-flight calls and fresh weights."""
    balancing.reset()
    yield
    balancing.reset()


def named(servers, name):
    return servers(json_reply({"target": name}))


def call(client, secret) -> str:
    response = client.post("/v1/chat/completions", b'{"model": "m"}', content_type="application/json", **auth(secret))
    assert response.status_code == 200
    b"".join(response.streaming_content)
    return RequestLog.objects.latest("id").target


def test_load_spreads_by_weight_within_two_percent_over_many_calls(client, servers):
    route = make_route(strategy="weighted")
    for name, weight in (("big", 5), ("medium", 3), ("small", 2)):
        make_target(route, named(servers, name).url, name=name, weight=weight)
    _, secret = make_key(routes=[route])

    counts = Counter(call(client, secret) for _ in range(100))

    # Smooth weighted round-robin is exact over whole cycles (10 calls here, 100 in all); 2% is the stated
    # tolerance for the spread over many calls in one process.
    for name, share in (("big", 0.5), ("medium", 0.3), ("small", 0.2)):
        assert abs(counts[name] / 100 - share) <= 0.02, counts


def test_weighted_round_robin_is_smooth():
    targets = [
        TargetInfo(
            id=i, name=n, url="", weight=w, position=i, credential_header="", credential_value="", model_aliases={}
        )
        for i, (n, w) in enumerate((("a", 5), ("b", 1), ("c", 1)))
    ]
    route_id = 990001  # a route of its own: no other test's state

    picks = "".join(balancing.smooth_pick(route_id, targets).name for _ in range(14))

    assert picks == "aabacaa" * 2  # nginx's sequence: the light targets are interleaved, not bunched


def test_disabled_targets_take_no_calls(client, servers):
    route = make_route(strategy="weighted")
    make_target(route, named(servers, "on").url, name="on")
    make_target(route, named(servers, "off").url, name="off", enabled=False)
    _, secret = make_key(routes=[route])

    assert {call(client, secret) for _ in range(6)} == {"on"}


def test_failover_sends_everything_to_the_primary_while_it_answers(client, servers):
    route = make_route(strategy="failover")
    make_target(route, named(servers, "secondary").url, name="secondary", position=2)
    make_target(route, named(servers, "primary").url, name="primary", position=1)
    _, secret = make_key(routes=[route])

    assert {call(client, secret) for _ in range(5)} == {"primary"}


def test_failover_moves_to_the_next_target_when_the_primary_is_down(client, servers):
    route = make_route(strategy="failover")
    make_target(route, refused_url(), name="primary", position=1)
    make_target(route, named(servers, "secondary").url, name="secondary", position=2)
    make_target(route, named(servers, "tertiary").url, name="tertiary", position=3)
    _, secret = make_key(routes=[route])

    assert call(client, secret) == "secondary"
    assert RequestLog.objects.latest("id").targets_tried == ["primary", "secondary"]


def test_least_inflight_sends_calls_away_from_a_target_busy_with_a_stream(client, servers):
    release = threading.Event()

    def held_stream(handler):
        handler.start_chunked()
        handler.send_chunk(b"data: {}\n\n")
        release.wait(10)
        handler.send_chunk(b"data: [DONE]\n\n")
        handler.end_chunked()

    one, two = servers(held_stream), servers(held_stream)
    route = make_route(strategy="least_inflight")
    make_target(route, one.url, name="one")
    make_target(route, two.url, name="two")
    _, secret = make_key(routes=[route])
    try:
        stream = client.post(
            "/v1/chat/completions", b'{"model": "m", "stream": true}', content_type="application/json", **auth(secret)
        )
        first_chunk = next(iter(stream.streaming_content))
        assert first_chunk == b"data: {}\n\n"
        busy, idle = (one, two) if one.requests else (two, one)
        idle.reply = busy.reply = json_reply({"ok": True})

        for _ in range(4):
            response = client.post(
                "/v1/chat/completions", b'{"model": "m"}', content_type="application/json", **auth(secret)
            )
            b"".join(response.streaming_content)

        assert len(busy.requests) == 1  # only the stream it is still serving
        assert len(idle.requests) == 4
    finally:
        release.set()
    b"".join(stream.streaming_content)  # the test client closes the response at its end
    assert balancing.inflight(route_target(route, busy)) == 0  # the finished stream gave its slot back


def route_target(route, server) -> TargetInfo:
    target = route.targets.get(url=server.url)
    return TargetInfo(
        id=target.id,
        name=target.name,
        url=target.url,
        weight=1,
        position=0,
        credential_header="",
        credential_value="",
        model_aliases={},
    )


def test_least_inflight_spreads_idle_calls_over_every_target(client, servers):
    route = make_route(strategy="least_inflight")
    for name in ("a", "b", "c"):
        make_target(route, named(servers, name).url, name=name)
    _, secret = make_key(routes=[route])

    counts = Counter(call(client, secret) for _ in range(30))

    assert counts == {"a": 10, "b": 10, "c": 10}  # ties rotate, so an idle route still spreads


def test_order_of_retries_follows_the_strategy():
    targets = [
        TargetInfo(
            id=900 + i,
            name=f"t{i}",
            url="",
            weight=1,
            position=i,
            credential_header="",
            credential_value="",
            model_aliases={},
        )
        for i in range(3)
    ]
    route = RouteInfo(
        id=990002,
        name="r",
        prefix="/v1",
        methods=frozenset(),
        models=frozenset(),
        match_headers={},
        match_body={},
        priority=0,
        strategy="weighted",
        connect_timeout=1,
        read_timeout=1,
        max_body_bytes=1,
        max_attempts=3,
        retry_statuses=frozenset(),
        retry_non_idempotent=False,
        fallback_id=None,
        limits={},
        targets=tuple(targets),
    )

    orders = [[t.name for t in balancing.order(route, targets)] for _ in range(3)]

    # Each call starts at the next target and would retry on the ones after it.
    assert orders == [["t0", "t1", "t2"], ["t1", "t2", "t0"], ["t2", "t0", "t1"]]
