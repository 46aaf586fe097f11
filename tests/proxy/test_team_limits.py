"""A team's own call limits hold across all its keys: requests per window, tokens per calendar
period and calls at once, counted once for the team (counters named t<team id>, in the shared
cache like every other limit), refused with 429 naming the team; each key's own limits still apply."""

import json
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from django.core.cache import cache
from django.utils import timezone

from proxy import quotas, slots, token_quota
from routes_admin.models import KeyUsage, RequestLog, Team
from routes_admin.services import spend
from tests.factories import MINUTE_LEFT, auth, make_key, make_route, window_left
from tests.proxy.test_quota_exactness import SERVERS, CountingUpstream
from tests.upstream import json_reply, sse_reply

pytestmark = pytest.mark.django_db

USAGE_60 = {"id": "x", "usage": {"prompt_tokens": 20, "completion_tokens": 40, "total_tokens": 60}}


def call(client, secret):
    return client.post("/v1/chat/completions", b'{"model": "m"}', content_type="application/json", **auth(secret))


def finished(client, secret):
    response = call(client, secret)
    if response.streaming:
        b"".join(response.streaming_content)
    return response


def team_with_time_left(**limits) -> Team:
    """A team whose per-minute window has MINUTE_LEFT seconds left (each counter has its own offset)."""
    while True:
        team = spend.save_team(f"team-{Team.objects.count() + 1}", **limits)
        if window_left(f"t{team.id}") >= MINUTE_LEFT:
            return team
        team.delete()


def member(team, route, **fields):
    key, secret = make_key(routes=[route], **fields)
    spend.join_team(key, team)
    return key, secret


def test_a_team_request_limit_holds_across_its_keys(client, upstream):
    route = make_route(upstream.url)
    team = team_with_time_left(requests_per_minute=3)
    _, first = member(team, route)
    _, second = member(team, route)
    _, outsider = make_key(routes=[route])
    assert [finished(client, secret).status_code for secret in (first, second, first)] == [200, 200, 200]
    refused = finished(client, second)
    assert refused.status_code == 429
    error = json.loads(refused.content)["error"]
    assert error["type"] == "rate_limit_exceeded"
    assert error["message"].startswith(f"The team {team.name} of this API key has used its limit of 3 requests")
    assert int(refused["Retry-After"]) >= 1
    assert "team_requests_per_minute" in refused["RateLimit-Policy"]
    assert RequestLog.objects.get(status=429).limit == "team_requests_per_minute"
    assert finished(client, outsider).status_code == 200  # a key outside the team is not held back


def test_a_key_keeps_its_own_limit_inside_a_team(client, upstream):
    route = make_route(upstream.url)
    team = team_with_time_left(requests_per_minute=100)
    _, secret = member(team, route, requests_per_day=1)
    assert finished(client, secret).status_code == 200
    refused = finished(client, secret)
    assert refused.status_code == 429
    assert RequestLog.objects.get(status=429).limit == "requests_per_day"


def test_team_tokens_count_for_all_its_keys_and_restart_from_their_usage(client, upstream):
    upstream.reply = json_reply(USAGE_60)
    route = make_route(upstream.url)
    team = spend.save_team("tokens", tokens_per_day=100)
    first_key, first = member(team, route)
    second_key, second = member(team, route)
    assert finished(client, first).status_code == 200
    assert finished(client, second).status_code == 200  # admitted at 60 of 100
    period = token_quota.periods(timezone.now())["tokens_per_day"]
    assert cache.get(token_quota.counter_key(f"t{team.id}", period)) == 120
    refused = finished(client, first)
    assert refused.status_code == 429
    assert "limit of 100 tokens per day" in json.loads(refused.content)["error"]["message"]
    assert RequestLog.objects.get(status=429).limit == "team_tokens_per_day"

    cache.clear()  # a restarted Redis: the team's counter restarts from its keys' durable usage
    assert (
        sum(KeyUsage.objects.filter(api_key__in=[first_key, second_key]).values_list("total_tokens", flat=True)) == 120
    )
    assert finished(client, second).status_code == 429
    assert cache.get(token_quota.counter_key(f"t{team.id}", period)) == 120


def test_team_concurrency_counts_calls_of_every_key(client, upstream):
    upstream.reply = sse_reply(["a", "[DONE]"])
    route = make_route(upstream.url)
    team = spend.save_team("busy", max_concurrent=1)
    _, first = member(team, route)
    _, second = member(team, route)
    streaming = call(client, first)  # not read yet: still in flight
    assert slots.in_use(quotas.SLOT_PREFIX + f"t{team.id}") == 1
    refused = call(client, second)
    assert refused.status_code == 429
    assert (
        "The team busy of this API key already has 1 calls in flight" in json.loads(refused.content)["error"]["message"]
    )
    b"".join(streaming.streaming_content)
    assert slots.in_use(quotas.SLOT_PREFIX + f"t{team.id}") == 0
    assert finished(client, second).status_code == 200


def test_a_key_that_leaves_the_team_is_no_longer_counted(client, upstream):
    route = make_route(upstream.url)
    team = team_with_time_left(requests_per_minute=1)
    key, secret = member(team, route)
    _, other = member(team, route)
    assert finished(client, other).status_code == 200
    assert finished(client, secret).status_code == 429
    spend.join_team(key, None)
    assert finished(client, secret).status_code == 200


def test_the_live_state_of_a_team_reads_its_counters():
    upstream_team = spend.save_team("live", requests_per_day=10, tokens_per_month=1000, max_concurrent=3)
    names = {quota.name: quota for quota in quotas.team_live_state(upstream_team)}
    assert set(names) == {"requests_per_day", "tokens_per_month", "max_concurrent"}
    assert (names["tokens_per_month"].limit, names["tokens_per_month"].remaining) == (1000, 1000)


@pytest.mark.parametrize("server_count", SERVERS)
def test_a_team_limit_holds_across_gateway_instances(cluster, server_count):
    """30 calls at once from two keys of one team, spread over the instances: exactly the team's
    10 requests per day pass (on Redis, two instances share the team's counter)."""
    upstream = CountingUpstream(delay=0.05)
    try:
        secrets = json.loads(
            cluster.shell(
                "import json\n"
                "from routes_admin.models import APIKey, Route, Team, UpstreamTarget\n"
                "route = Route.objects.create(name='r', path_prefix='/v1', max_attempts=1)\n"
                f"UpstreamTarget.objects.create(route=route, url='{upstream.url}')\n"
                "team = Team.objects.create(name='shared', requests_per_day=10)\n"
                "secrets = [APIKey.objects.issue(name=f'k{n}', all_routes=True, team=team)[1] for n in range(2)]\n"
                "print(json.dumps(secrets))"
            )
            .strip()
            .splitlines()[-1]
        )
        urls = [cluster.start().url for _ in range(server_count)]

        def one(n: int) -> int:
            headers = {"Authorization": f"Bearer {secrets[n % 2]}"}
            url = urls[n % len(urls)] + "/v1/chat/completions"
            return requests.post(url, json={"model": "m"}, headers=headers, timeout=30).status_code

        with ThreadPoolExecutor(30) as pool:
            statuses = Counter(pool.map(one, range(30)))
        assert statuses == {200: 10, 429: 20}
        assert len(upstream.requests) == 10
    finally:
        upstream.stop()
