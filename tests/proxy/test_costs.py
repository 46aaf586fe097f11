"""The cost of every call: from the reported tokens and the price in force when it started,
stored on its log row (null without a price, never 0) and summed in the rollups."""

import json
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db.models import Sum
from django.utils import timezone

from routes_admin.models import ModelPrice, RequestLog, UsageRollup
from routes_admin.pricing import from_picos
from tests.factories import auth, make_key, make_route, make_target
from tests.proxy.test_cut_streams import cut_stream, held_stream
from tests.upstream import json_reply, sse_reply

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def keep_connection(monkeypatch):
    """A finished call must not close the test's connection (it holds the test's transaction)."""
    from django.db import connection

    monkeypatch.setattr(connection, "close_if_unusable_or_obsolete", lambda: None)


USAGE = {"prompt_tokens": 812, "completion_tokens": 96, "total_tokens": 908}


def price(model="m", input="0.15", output="0.60", **fields) -> ModelPrice:
    fields.setdefault("valid_from", timezone.now() - timedelta(minutes=1))
    return ModelPrice.objects.create(
        model=model, input_per_million=Decimal(input), output_per_million=Decimal(output), **fields
    )


def call(client, secret, model="m", stream=False):
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    if stream:
        body["stream"] = True
    response = client.post("/v1/chat/completions", json.dumps(body), content_type="application/json", **auth(secret))
    b"".join(response) if not response.streaming else b"".join(response.streaming_content)
    response.close()
    return response


def rollup_cost(dimension="all") -> Decimal:
    rows = UsageRollup.objects.filter(period="day", dimension=dimension)
    return from_picos(rows.aggregate(total=Sum("cost_picos"))["total"] or 0)


def test_a_call_costs_its_reported_tokens_at_its_price_exactly(client, upstream):
    upstream.reply = json_reply({"choices": [], "usage": USAGE})
    price(per_call="0.001")
    secret = make_key(routes=[make_route(upstream.url)])[1]
    assert call(client, secret).status_code == 200
    row = RequestLog.objects.get()
    assert row.cost == Decimal("0.0011794")  # 812 x 0.15/M + 96 x 0.60/M + 0.001
    assert row.detail["cost"]["input"] == "0.150000" and row.detail["cost"]["per_call_applied"] is True
    assert rollup_cost() == row.cost and rollup_cost("key") == row.cost


def test_a_stream_costs_the_usage_it_reported(client, upstream):
    chunk = {"choices": [], "usage": USAGE}
    upstream.reply = sse_reply([{"choices": [{"delta": {"content": "Hi"}}]}, chunk, "[DONE]"])
    price()
    secret = make_key(routes=[make_route(upstream.url)])[1]
    call(client, secret, stream=True)
    row = RequestLog.objects.get()
    assert row.streamed and row.cost == Decimal("0.0001794")


def test_a_cut_stream_gets_an_estimated_cost_marked_as_such(client, upstream):
    gates: list = []
    upstream.reply = held_stream(gates)
    price()
    secret = make_key(routes=[make_route(upstream.url)])[1]
    body = json.dumps({"model": "m", "stream": True, "messages": [{"role": "user", "content": "Hi"}]}).encode()
    cut_stream(client, secret, body)
    for gate in gates:
        gate.set()
    row = RequestLog.objects.get()
    assert row.usage_estimated is True
    expected = (Decimal(row.prompt_tokens) * Decimal("0.15") + Decimal(row.completion_tokens) * Decimal("0.60")) / 10**6
    assert row.cost == expected > 0


def test_a_model_without_a_price_has_no_cost_not_zero(client, upstream):
    upstream.reply = json_reply({"choices": [], "usage": USAGE})
    price(model="other")
    secret = make_key(routes=[make_route(upstream.url)])[1]
    call(client, secret)
    assert RequestLog.objects.get().cost is None
    assert UsageRollup.objects.filter(period="day", dimension="all").get().unpriced == 1


def test_a_price_change_never_alters_calls_already_made(client, upstream):
    upstream.reply = json_reply({"choices": [], "usage": USAGE})
    old = price()
    secret = make_key(routes=[make_route(upstream.url)])[1]
    call(client, secret)
    price(input="1", output="2", valid_from=timezone.now())  # a new price from now on
    old.input_per_million = Decimal(5)  # and the old one edited
    old.save()
    call(client, secret)
    first, second = RequestLog.objects.order_by("id")
    assert first.cost == Decimal("0.0001794")
    assert second.cost == Decimal("0.001004")  # 812 x 1/M + 96 x 2/M
    assert rollup_cost() == first.cost + second.cost


def test_a_price_for_the_answering_target_and_its_upstream_model_name(client, upstream):
    upstream.reply = json_reply({"choices": [], "usage": USAGE})
    route = make_route()
    target = make_target(route, upstream.url, model_aliases={"m": "vendor-m"})
    price(model="m", input="9", output="9")  # the public name: not what the upstream is paid for
    price(model="vendor-m")
    price(model="vendor-m", input="1", output="1", target=target)
    secret = make_key(routes=[route])[1]
    call(client, secret)
    row = RequestLog.objects.get()
    assert row.upstream_model == "vendor-m"
    assert row.cost == Decimal("0.000908")


def test_a_refused_call_of_a_priced_model_costs_nothing(client, upstream):
    price()
    route = make_route(upstream.url)
    secret = make_key(routes=[])[1]  # may not call the route
    assert call(client, secret).status_code == 403
    row = RequestLog.objects.get()
    assert row.cost == Decimal(0)
    assert route  # the row of a call no upstream answered carries no per-call price


def test_the_call_page_shows_how_the_cost_was_computed(client, upstream):
    from console.explain import explain

    upstream.reply = json_reply({"choices": [], "usage": USAGE})
    price()
    secret = make_key(routes=[make_route(upstream.url)])[1]
    call(client, secret)
    call(client, secret, model="unpriced")
    priced, unpriced = RequestLog.objects.order_by("id")
    assert ("Cost", "812 in × 0.15/M + 96 out × 0.6/M = 0.0001794 USD") in explain(priced).steps
    assert ("Cost", "no price") in explain(unpriced).steps


def test_costs_reach_the_export_the_api_and_prometheus(client, upstream):
    from prometheus_client import REGISTRY

    from console import export
    from proxy import metrics

    upstream.reply = json_reply({"choices": [], "usage": USAGE})
    price()
    route = make_route(upstream.url, name="spendy")
    secret = make_key(routes=[route])[1]
    before = REGISTRY.get_sample_value("gateway_spend_total", {"route": "spendy", "model": "m"}) or 0
    call(client, secret)
    call(client, secret, model="unpriced")
    after = REGISTRY.get_sample_value("gateway_spend_total", {"route": "spendy", "model": "m"})
    assert after - before == pytest.approx(0.0001794)
    assert REGISTRY.get_sample_value("gateway_spend_total", {"route": "spendy", "model": "unpriced"}) is None
    lines = [json.loads(line) for line in export._json_lines(RequestLog.objects.all())]
    assert sorted((line["model"], line["cost"]) for line in lines) == [("m", "0.000179400000"), ("unpriced", None)]
    csv_text = "".join(export._csv_lines(RequestLog.objects.all()))
    assert "0.000179400000" in csv_text
    from api.serializers import RequestLogSerializer

    data = RequestLogSerializer(RequestLog.objects.order_by("id"), many=True).data
    assert [row["cost"] for row in data] == ["0.000179400000", None]
    assert metrics.SPEND


def test_the_explorer_filters_by_minimum_cost_and_team():
    from routes_admin.filtersets import RequestLogFilterSet

    def filtered(query):
        filterset = RequestLogFilterSet(query, queryset=RequestLog.objects.order_by())
        assert filterset.is_valid(), filterset.errors
        return filterset.qs

    now = timezone.now()
    common = dict(method="POST", path="/v1/x", status=200, latency_ms=1, created=now, request_id="r")
    RequestLog.objects.create(cost=Decimal("0.5"), team_name="acme", **common)
    RequestLog.objects.create(cost=Decimal("0.01"), team_name="acme", **common)
    RequestLog.objects.create(cost=None, **common)
    assert [row.cost for row in filtered({"min_cost": "0.1"})] == [Decimal("0.5")]
    assert filtered({"team": "acme"}).count() == 2
