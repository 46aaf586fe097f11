"""Budgets in money per key, team and route: reserved at admission, settled to the real cost when
the call ends, refused with 429 budget_exceeded once the period's spend has reached them."""

import json
import logging
from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.cache import cache
from django.db.models import Sum
from django.utils import timezone

from proxy import budgets, config, token_quota
from routes_admin.models import ModelPrice, RequestLog
from routes_admin.services import spend
from tests.factories import auth, make_key, make_route
from tests.proxy.test_cache_failure import own_redis  # noqa: F401 (a fixture)
from tests.upstream import json_reply

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def keep_connection(monkeypatch):
    """A finished call must not close the test's connection (it holds the test's transaction)."""
    from django.db import connection

    monkeypatch.setattr(connection, "close_if_unusable_or_obsolete", lambda: None)


USAGE = {"prompt_tokens": 100, "completion_tokens": 50, "total_tokens": 150}
COST = Decimal("0.002")  # 100 x 10/M + 50 x 20/M


@pytest.fixture
def priced(upstream):
    upstream.reply = json_reply({"choices": [], "usage": USAGE})
    ModelPrice.objects.create(
        model="m",
        input_per_million=Decimal(10),
        output_per_million=Decimal(20),
        valid_from=timezone.now() - timedelta(minutes=1),
    )
    return make_route(upstream.url, name="chat")


def call(client, secret, max_tokens=50):
    body = {"model": "m", "max_tokens": max_tokens, "messages": [{"role": "user", "content": "hi"}]}
    response = client.post("/v1/chat/completions", json.dumps(body), content_type="application/json", **auth(secret))
    if response.streaming:
        b"".join(response.streaming_content)
    return response


def spent() -> Decimal:
    return RequestLog.objects.aggregate(total=Sum("cost"))["total"] or Decimal(0)


def held(kind: str, owner_id: int, name="budget_per_day") -> int:
    period = token_quota.periods(timezone.now())[budgets.PERIODS[name]]
    return int(cache.get(f"budget:held:{kind}{owner_id}:{period.tag}") or 0)


def test_calls_one_at_a_time_spend_exactly_up_to_the_budget_then_get_429(client, priced):
    key, secret = make_key(routes=[priced], budget_per_day=3 * COST)
    # Each call reserves more than it costs (its max_tokens and body size), yet the third is
    # admitted: a call is refused for what others spent and hold, never for its own estimate.
    assert [call(client, secret, max_tokens=5000).status_code for _ in range(3)] == [200, 200, 200]
    assert spent() == 3 * COST
    refused = call(client, secret)
    assert refused.status_code == 429
    error = json.loads(refused.content)["error"]
    assert error["type"] == "budget_exceeded"
    assert "daily budget of 0.006 USD of key" in error["message"] and "0.006 spent" in error["message"]
    period = token_quota.periods(timezone.now())["tokens_per_day"]
    assert 0 < int(refused["Retry-After"]) <= period.seconds_left(timezone.now())
    row = RequestLog.objects.order_by("-id").first()
    assert (row.status, row.error_type, row.limit) == (429, "budget_exceeded", "budget_per_day")
    assert held("key", key.id) == 0  # every reservation settled
    assert len(priced.targets.all()) == 1


def test_a_team_budget_holds_across_its_keys(client, priced):
    team = spend.save_team("acme", budget_per_month=str(2 * COST))
    first, first_secret = make_key(routes=[priced])
    second, second_secret = make_key(routes=[priced])
    other_secret = make_key(routes=[priced])[1]
    spend.join_team(first, team)
    spend.join_team(second, team)
    assert call(client, first_secret).status_code == 200
    assert call(client, second_secret).status_code == 200
    refused = call(client, first_secret)
    assert refused.status_code == 429
    assert "monthly budget of 0.004 USD of team acme" in json.loads(refused.content)["error"]["message"]
    assert call(client, second_secret).status_code == 429
    assert call(client, other_secret).status_code == 200  # a key outside the team is not held back
    assert RequestLog.objects.filter(status=429).first().limit == "team_budget_per_month"
    assert set(RequestLog.objects.filter(status=200).values_list("team_name", flat=True)) == {"acme", ""}


def test_a_route_budget_holds_across_every_key(client, priced):
    spend.set_budgets(priced, {"budget_per_day": str(COST)})
    assert call(client, make_key(routes=[priced])[1]).status_code == 200
    refused = call(client, make_key(routes=[priced])[1])
    assert refused.status_code == 429
    assert "of route chat" in json.loads(refused.content)["error"]["message"]


def test_reservations_of_calls_in_flight_count_against_the_budget(client, priced):
    key, secret = make_key(routes=[priced], budget_per_day=3 * COST)
    assert call(client, secret).status_code == 200
    period = token_quota.periods(timezone.now())["tokens_per_day"]
    held_key = f"budget:held:key{key.id}:{period.tag}"
    cache.set(held_key, int(2 * COST * 10**12))  # two other calls in flight hold the rest
    refused = call(client, secret)
    assert refused.status_code == 429
    assert "0.004 reserved by calls in flight" in json.loads(refused.content)["error"]["message"]
    cache.set(held_key, int(COST * 10**12))  # one of them settled: room again
    assert call(client, secret).status_code == 200


def test_a_failed_call_gives_back_its_reservation(client, priced, upstream):
    key, secret = make_key(routes=[priced], budget_per_day=COST)
    upstream.reply = json_reply({"error": "down"}, status=500)
    assert call(client, secret).status_code == 500
    assert held("key", key.id) == 0
    assert RequestLog.objects.get().cost == 0  # no tokens reported, no per-call price on an error
    upstream.reply = json_reply({"choices": [], "usage": USAGE})
    assert call(client, secret).status_code == 200  # the failed call spent nothing


def test_the_spend_counter_restarts_from_the_log(client, priced):
    key, secret = make_key(routes=[priced], budget_per_day=2 * COST)
    assert call(client, secret).status_code == 200
    cache.clear()  # a restarted Redis: the counters are gone, the log is not
    config.invalidate()
    assert call(client, secret).status_code == 200
    assert call(client, secret).status_code == 429


def test_a_team_deleted_while_its_keys_call_leaves_their_rows_as_they_were(client, priced):
    team = spend.save_team("gone", budget_per_day=str(COST))
    key, secret = make_key(routes=[priced])
    spend.join_team(key, team)
    assert call(client, secret).status_code == 200
    team.delete()
    key.refresh_from_db()
    assert key.team is None  # the key stays, outside any team, with its own budgets only
    assert call(client, secret).status_code == 200
    first, second = RequestLog.objects.order_by("id")
    assert (first.team_name, first.cost) == ("gone", COST)
    assert (second.team_name, second.cost) == ("", COST)


def test_with_the_cache_down_fail_closed_refuses_and_fail_open_serves(
    client,
    priced,
    own_redis,  # noqa: F811
    settings,
    caplog,
):
    _, secret = make_key(routes=[priced], budget_per_day=10 * COST)
    assert call(client, secret).status_code == 200
    own_redis.stop()
    settings.GATEWAY_CACHE_FAILURE = "closed"
    closed = call(client, secret)
    assert (closed.status_code, json.loads(closed.content)["error"]["type"]) == (503, "service_unavailable")
    settings.GATEWAY_CACHE_FAILURE = "open"
    with caplog.at_level(logging.WARNING, logger="gateway.budgets"):
        assert call(client, secret).status_code == 200
    assert any("without budget checks" in r.getMessage() for r in caplog.records)
    assert RequestLog.objects.filter(status=200).count() == 2


def test_the_next_day_counts_on_new_counters_in_the_same_configuration_copy(priced):
    """The budgets of a key are worked out once per route and day in the configuration copy the
    process holds: a copy made yesterday still counts today's calls on today's counters."""
    key, _ = make_key(routes=[priced], budget_per_day=COST, budget_per_month=10 * COST)
    snapshot = config.current()
    info, route = snapshot.key(key.prefix), snapshot.routes_by_id[priced.id]
    today = timezone.now()
    tomorrow = today + timedelta(days=1)
    for moment in (today, tomorrow, today):
        tags = {name: period.tag for name, period in token_quota.periods(moment).items()}
        counters = budgets.counters_for(info, route, moment)
        assert {c.name: c.spent_key for c in counters} == {
            "budget_per_day": f"budget:spent:key{key.id}:{tags['tokens_per_day']}",
            "budget_per_month": f"budget:spent:key{key.id}:{tags['tokens_per_month']}",
        }
        assert [c.limit for c in counters] == [int(COST * 10**12), int(10 * COST * 10**12)]


def test_tokens_are_counted_once_with_the_settlement_even_when_their_counter_went_missing(client, priced, upstream):
    """A call with a budget adds its tokens in the settlement's round trip: once, and a token
    counter lost while the call was in flight (a restarted cache) is seeded from the usage rows."""
    key, secret = make_key(routes=[priced], budget_per_day=100 * COST, tokens_per_day=10_000)
    assert call(client, secret).status_code == 200
    counter = token_quota.counter_key(f"k{key.id}", token_quota.periods(timezone.now())["tokens_per_day"])
    assert cache.get(counter) == 150

    def lose_the_counter_then_answer(handler):
        cache.delete(counter)
        handler.send_json(200, {"choices": [], "usage": USAGE})

    upstream.reply = lose_the_counter_then_answer
    assert call(client, secret).status_code == 200
    assert cache.get(counter) == 300  # 150 seeded from the first call's usage row, then this call's 150
    assert spent() == 2 * COST
