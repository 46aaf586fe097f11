"""/metrics: Prometheus text, and the same totals whichever gunicorn worker answers the scrape."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.factories import auth, make_key, make_route
from tests.upstream import json_reply, sse_reply

USAGE = {"prompt_tokens": 7, "completion_tokens": 5, "total_tokens": 12}


def samples(text: str) -> dict:
    """{(sample name, sorted labels): value} of a Prometheus text exposition."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(text: str, name: str, **labels) -> float:
    return samples(text).get((name, tuple(sorted(labels.items()))), 0.0)


def scrape(client) -> str:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    return response.content.decode()


@pytest.mark.django_db
def test_calls_latency_and_tokens_are_counted(client, upstream):
    upstream.reply = json_reply({"id": "x", "usage": USAGE})
    route = make_route(upstream.url, name="metered")
    _, secret = make_key(routes=[route])
    before = scrape(client)
    for _ in range(3):
        response = client.post("/v1/chat/completions", b"{}", content_type="application/json", **auth(secret))
        b"".join(response.streaming_content)  # the test client closes the answer at its end: the call ends
    client.post("/v1/chat/completions", b"{}", content_type="application/json", HTTP_AUTHORIZATION="Bearer nope")
    after = scrape(client)

    def delta(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("gateway_calls_total", route="metered", status="200") == 3
    assert delta("gateway_calls_total", route="", status="401") == 1
    assert delta("gateway_call_duration_seconds_count", route="metered") == 3
    assert delta("gateway_upstream_duration_seconds_count", route="metered", target=f"127.0.0.1:{upstream.port}") == 3
    assert delta("gateway_tokens_total", route="metered", kind="prompt") == 21
    assert delta("gateway_tokens_total", route="metered", kind="completion") == 15


@pytest.mark.django_db
def test_quota_rejections_are_counted_by_limit(client, upstream):
    route = make_route(upstream.url, name="capped")
    _, secret = make_key(routes=[route], requests_per_minute=1)
    before = scrape(client)
    assert client.post("/v1/x", **auth(secret)).status_code == 200
    assert client.post("/v1/x", **auth(secret)).status_code == 429
    after = scrape(client)
    assert (
        value(after, "gateway_quota_rejections_total", route="capped", limit="requests_per_minute")
        - value(before, "gateway_quota_rejections_total", route="capped", limit="requests_per_minute")
        == 1
    )


@pytest.mark.django_db
def test_metrics_token_is_required_when_set(client, settings):
    settings.GATEWAY_METRICS_TOKEN = "scrape-me"
    refused = client.get("/metrics")
    assert refused.status_code == 401
    assert refused.json()["error"]["type"] == "invalid_api_key"
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer scrape-me").status_code == 200


def test_totals_are_summed_across_gunicorn_workers(cluster, upstream, tmp_path):
    def slow(handler):
        time.sleep(0.2)  # keeps calls overlapping so both workers take some
        handler.send_json(200, {"usage": USAGE})

    upstream.reply = slow
    secret = cluster.route_and_key(upstream.url, name="multi")
    metrics_dir = tmp_path / "metrics"
    gateway = cluster.start(workers=2, PROMETHEUS_MULTIPROC_DIR=metrics_dir)

    def call(_):
        # A new connection per call, so the kernel spreads them over both workers.
        return requests.post(
            f"{gateway.url}/v1/chat/completions", json={}, headers={"Authorization": f"Bearer {secret}"}, timeout=10
        ).status_code

    with ThreadPoolExecutor(8) as pool:  # the test upstream's listen backlog is small
        statuses = list(pool.map(call, range(40)))
    assert statuses == [200] * 40
    counter_files = list(metrics_dir.glob("counter_*.db"))
    assert len(counter_files) == 2, "both workers served calls"
    # A call is counted when its answer closes, a moment after the client has read it.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if (
            value(
                requests.get(f"{gateway.url}/metrics", timeout=5).text,
                "gateway_calls_total",
                route="multi",
                status="200",
            )
            == 40
        ):
            break
        time.sleep(0.05)
    for _ in range(4):  # any worker may answer the scrape; each must report the whole
        text = requests.get(f"{gateway.url}/metrics", timeout=5).text
        assert value(text, "gateway_calls_total", route="multi", status="200") == 40
        assert value(text, "gateway_tokens_total", route="multi", kind="prompt") == 40 * 7
        assert value(text, "gateway_in_flight_calls") == 0


def test_in_flight_calls_include_open_streams(cluster, upstream):
    upstream.reply = sse_reply([{"n": i} for i in range(20)], interval=0.2)
    secret = cluster.route_and_key(upstream.url, name="streams")
    gateway = cluster.start(workers=2)
    first_chunks = [threading.Event() for _ in range(3)]

    def stream(first_chunk):
        with requests.post(
            f"{gateway.url}/v1/chat/completions",
            json={"stream": True},
            headers={"Authorization": f"Bearer {secret}"},
            stream=True,
            timeout=10,
        ) as response:
            for _ in response.iter_content(None):
                first_chunk.set()

    streams = [threading.Thread(target=stream, args=(event,)) for event in first_chunks]
    for thread in streams:
        thread.start()
    assert all(event.wait(5) for event in first_chunks)  # all three are streaming now
    during = requests.get(f"{gateway.url}/metrics", timeout=5).text
    for thread in streams:
        thread.join(15)
    # The server ends a call just after its last byte, which may reach the client first.
    deadline = time.monotonic() + 3
    after = requests.get(f"{gateway.url}/metrics", timeout=5).text
    while value(after, "gateway_in_flight_calls") and time.monotonic() < deadline:
        time.sleep(0.1)
        after = requests.get(f"{gateway.url}/metrics", timeout=5).text
    assert value(during, "gateway_in_flight_calls") == 3
    assert value(after, "gateway_in_flight_calls") == 0
    assert value(after, "gateway_calls_total", route="streams", status="200") == 3


@pytest.mark.django_db
def test_breaker_state_is_exported_per_target(client, settings):
    from tests.servers import free_port

    settings.GATEWAY_BREAKER_FAILURES = 1
    route = make_route(f"http://127.0.0.1:{free_port()}", name="fragile")  # nothing listens there
    _, secret = make_key(routes=[route])
    target = route.targets.get().name
    before = scrape(client)
    assert value(before, "gateway_breaker_state", route="fragile", target=target, state="closed") == 1
    assert (
        client.post("/v1/chat/completions", b"{}", content_type="application/json", **auth(secret)).status_code == 502
    )
    after = scrape(client)
    assert value(after, "gateway_breaker_state", route="fragile", target=target, state="open") == 1
    assert value(after, "gateway_breaker_state", route="fragile", target=target, state="closed") == 0
