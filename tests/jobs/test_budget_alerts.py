"""Budget alerts: when a period's spend crosses 50, 80 or 100 % of a budget (or the thresholds a key,
team or route sets), one alert per threshold and period is recorded with the call that crossed it,
sent by the jobs workers to the alert webhook (signed like job webhooks, on the same allow-list)
and/or by email, retried with backoff when delivery fails, a bounded number of times.

Real parts: the upstream, the webhook receiver and the SMTP server listen on 127.0.0.1; the
queue is the jobs' database queue, run by the jobs worker's own loop."""

import hashlib
import hmac
import json
import time
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from io import StringIO

import pytest
import requests
from django.core.management import call_command
from django.test import override_settings
from django.utils import timezone

from proxy import alerts, recording
from routes_admin.models import BudgetAlert, RequestLog
from routes_admin.services import spend
from tests.factories import make_key
from tests.jobs.test_jobs import work_off
from tests.proxy.test_budgets import COST, call, priced  # noqa: F401 (a fixture)
from tests.proxy.test_budgets_concurrency import BODY, budgeted_key, shell_json, stack  # noqa: F401 (a fixture)
from tests.proxy.test_quota_exactness import SERVERS
from tests.smtp import SMTPServer
from tests.upstream import UpstreamServer

pytestmark = pytest.mark.django_db(transaction=True)
WEBHOOK_SECRET = "budget-alert-test-secret"


class AlertReceiver(UpstreamServer):
    """Verifies each alert's signature and timestamp as a receiver would; answers 500 to the
    first `fail_first` deliveries."""

    def __init__(self, fail_first: int = 0):
        super().__init__()
        self.fail_first = fail_first
        self.secret = ""
        self.verified: list[dict] = []
        self.url = f"{self.url}/hooks/budget"
        self.reply = self.check

    def check(self, handler):
        received = handler.received
        timestamp = received.headers["x-gateway-timestamp"]
        message = f"{timestamp}\n{self.url}\n".encode() + received.body
        expected = "sha256=" + hmac.new(self.secret.encode(), message, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, received.headers["x-gateway-signature"]):
            return handler.send_json(401, {"error": "bad signature"})
        if abs(time.time() - int(timestamp)) > 300:
            return handler.send_json(401, {"error": "old"})
        if len(self.requests) <= self.fail_first:
            return handler.send_json(500, {"error": "try later"})
        self.verified.append(json.loads(received.body))
        handler.send_json(200, {"ok": True})


@pytest.fixture
def receiver():
    server = AlertReceiver()
    with override_settings(
        GATEWAY_WEBHOOK_HOSTS=[f"127.0.0.1:{server.port}"],
        GATEWAY_WEBHOOK_SECRET=WEBHOOK_SECRET,
        GATEWAY_WEBHOOK_BACKOFF_SECONDS=0,
        GATEWAY_BUDGET_ALERT_WEBHOOK=server.url,
    ):
        out = StringIO()
        call_command("alert_webhook_secret", stdout=out)
        server.secret = out.getvalue().strip()
        yield server
    server.stop()


@pytest.fixture
def smtp(settings):
    server = SMTPServer()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = server.host, server.port
    settings.GATEWAY_BUDGET_ALERT_EMAILS = ["finance@example.com", "lead@example.com"]
    settings.GATEWAY_WEBHOOK_BACKOFF_SECONDS = 0
    yield server
    server.stop()


def spend_calls(client, secret, count: int) -> list[int]:
    return [call(client, secret).status_code for _ in range(count)]


def test_each_threshold_is_crossed_once_by_the_call_that_passes_it(client, priced):  # noqa: F811
    key, secret = make_key(routes=[priced], budget_per_day=10 * COST)
    assert spend_calls(client, secret, 11) == [200] * 10 + [429]
    found = list(BudgetAlert.objects.order_by("threshold"))
    assert [(a.scope, a.owner_id, a.budget, a.threshold) for a in found] == [
        ("key", key.id, "budget_per_day", 50),
        ("key", key.id, "budget_per_day", 80),
        ("key", key.id, "budget_per_day", 100),
    ]
    rows = list(RequestLog.objects.filter(status=200).order_by("id"))
    crossing = {a.threshold: a.request_id for a in found}
    assert crossing == {50: rows[4].request_id, 80: rows[7].request_id, 100: rows[9].request_id}
    assert [a.spent for a in found] == [5 * COST, 8 * COST, 10 * COST]
    assert {a.period_start for a in found} == {timezone.localdate()}
    assert rows[4].detail["budget_alerts"][0]["threshold"] == 50  # the call's row says what it crossed
    assert all(a.state == BudgetAlert.State.PENDING for a in found)  # no worker ran yet


def test_a_team_and_a_route_use_their_own_thresholds(client, priced):  # noqa: F811
    team = spend.save_team("acme", budget_per_month=str(4 * COST), alert_thresholds="25, 75")
    spend.set_budgets(priced, {"budget_per_day": str(100 * COST)})
    priced.alert_thresholds = "none"
    priced.save()
    first, first_secret = make_key(routes=[priced])
    second, second_secret = make_key(routes=[priced])
    spend.join_team(first, team)
    spend.join_team(second, team)
    assert spend_calls(client, first_secret, 1) + spend_calls(client, second_secret, 2) == [200] * 3
    assert list(BudgetAlert.objects.order_by("threshold").values_list("scope", "owner_name", "threshold")) == [
        ("team", "acme", 25),
        ("team", "acme", 75),
    ]


def test_a_crossing_seen_twice_is_recorded_once(client, priced):  # noqa: F811
    """After a reseeded counter or a replayed spool file the same crossing may come again: the
    unique constraint on (scope, owner, budget, threshold, period start) keeps one alert."""
    _, secret = make_key(routes=[priced], budget_per_day=2 * COST, alert_thresholds="50")
    spend_calls(client, secret, 1)
    row = RequestLog.objects.get()
    again = {
        "request_id": "again",
        "created": row.created,
        "latency_ms": 1.0,
        "detail": row.detail,
    }
    assert alerts.record([again]) == []
    assert BudgetAlert.objects.count() == 1


def test_an_alert_with_unreadable_data_never_costs_the_call_its_log_row(client, priced):  # noqa: F811
    row = {"request_id": "odd", "created": timezone.now(), "latency_ms": 1.0, "detail": {"budget_alerts": [{}]}}
    assert alerts.record([row]) == []


def test_the_webhook_is_signed_retried_and_the_alert_records_how_it_went(client, priced, receiver):  # noqa: F811
    receiver.fail_first = 1
    _, secret = make_key(routes=[priced], budget_per_day=2 * COST, alert_thresholds="50")
    spend_calls(client, secret, 1)
    work_off()
    alert = BudgetAlert.objects.get()
    assert (alert.state, alert.attempts, alert.webhook_status) == ("sent", 2, 200)
    assert alert.webhook_sent is not None and alert.email_sent is None and alert.error == ""
    assert len(receiver.requests) == 2 and receiver.last.headers["x-gateway-alert-id"] == str(alert.id)
    (document,) = receiver.verified
    assert document["type"] == "budget.threshold_crossed"
    assert (document["scope"], document["threshold_percent"], document["budget"]) == ("key", 50, "budget_per_day")
    assert Decimal(document["spent"]) == COST and document["currency"] == "USD"
    assert "crossing 50 % of its daily budget" in document["text"]


def test_a_webhook_that_keeps_failing_is_given_up_after_the_bounded_attempts(client, priced, receiver, settings):  # noqa: F811
    receiver.fail_first = 100
    settings.GATEWAY_WEBHOOK_MAX_ATTEMPTS = 3
    _, secret = make_key(routes=[priced], budget_per_day=2 * COST, alert_thresholds="50")
    spend_calls(client, secret, 1)
    work_off()
    alert = BudgetAlert.objects.get()
    assert (alert.state, alert.attempts, alert.webhook_status) == ("failed", 3, 500)
    assert "answered 500" in alert.error and len(receiver.requests) == 3


def test_a_webhook_off_the_allow_list_is_refused_and_not_tried_again(client, priced, receiver, settings):  # noqa: F811
    settings.GATEWAY_WEBHOOK_HOSTS = ["hooks.example.com"]
    _, secret = make_key(routes=[priced], budget_per_day=2 * COST, alert_thresholds="50")
    spend_calls(client, secret, 1)
    work_off()
    alert = BudgetAlert.objects.get()
    assert (alert.state, alert.attempts) == ("failed", 1)
    assert "allow-list" in alert.error and receiver.requests == []


def test_alerts_are_emailed_and_a_refused_message_is_sent_again(client, priced, smtp):  # noqa: F811
    smtp.refuse = 1
    team = spend.save_team("acme", budget_per_day=str(2 * COST), alert_thresholds="50,100")
    key, secret = make_key(routes=[priced])
    spend.join_team(key, team)
    spend_calls(client, secret, 2)
    work_off()
    assert list(BudgetAlert.objects.order_by("threshold").values_list("state", flat=True)) == ["sent", "sent"]
    assert sorted(BudgetAlert.objects.values_list("attempts", flat=True)) == [1, 2]  # one was refused once
    assert len(smtp.messages) == 2
    sender, recipients, message = smtp.messages[0]
    assert recipients == ["finance@example.com", "lead@example.com"]
    assert "team acme" in message["Subject"] and "of the daily budget spent" in message["Subject"]
    assert "has spent" in message.get_content()


def test_an_alert_goes_to_the_webhook_and_by_email(client, priced, receiver, smtp):  # noqa: F811
    _, secret = make_key(routes=[priced], budget_per_day=2 * COST, alert_thresholds="50")
    spend_calls(client, secret, 1)
    work_off()
    alert = BudgetAlert.objects.get()
    assert alert.state == "sent" and alert.webhook_sent and alert.email_sent
    assert len(receiver.verified) == 1 and len(smtp.messages) == 1


def test_a_team_with_its_own_destinations_gets_its_alerts_there(client, priced, receiver, smtp):  # noqa: F811
    """A team's own webhook and addresses replace the gateway's for the team's alerts; its key's
    alerts still go to the gateway's."""
    team_receiver = AlertReceiver()
    team_receiver.secret = receiver.secret  # one alerts secret per gateway
    try:
        with override_settings(GATEWAY_WEBHOOK_HOSTS=[f"127.0.0.1:{receiver.port}", f"127.0.0.1:{team_receiver.port}"]):
            team = spend.save_team(
                "acme",
                budget_per_day=str(2 * COST),
                alert_thresholds="50",
                alert_webhook=team_receiver.url,
                alert_emails="lead@acme.example",
            )
            key, secret = make_key(routes=[priced], budget_per_day=2 * COST, alert_thresholds="50")
            spend.join_team(key, team)
            spend_calls(client, secret, 1)
            work_off()
    finally:
        team_receiver.stop()
    assert dict(BudgetAlert.objects.values_list("scope", "state")) == {"key": "sent", "team": "sent"}
    assert [(d["scope"], d["owner"]["name"]) for d in team_receiver.verified] == [("team", "acme")]
    assert [d["scope"] for d in receiver.verified] == ["key"]
    by_recipients = {tuple(recipients): message["Subject"] for _, recipients, message in smtp.messages}
    assert set(by_recipients) == {("lead@acme.example",), ("finance@example.com", "lead@example.com")}
    assert "team acme" in by_recipients[("lead@acme.example",)]


def test_without_a_destination_an_alert_is_recorded_only(client, priced):  # noqa: F811
    _, secret = make_key(routes=[priced], budget_per_day=2 * COST, alert_thresholds="50")
    spend_calls(client, secret, 1)
    work_off()
    assert BudgetAlert.objects.get().state == "unsent"


def test_an_alert_and_its_delivery_are_saved_with_the_batch_of_rows(client, priced, receiver, settings):  # noqa: F811
    """With batched writes (production's timing) the alert waits for its call's row, then goes out."""
    settings.GATEWAY_LOG_FLUSH_SECONDS = 60
    _, secret = make_key(routes=[priced], budget_per_day=2 * COST, alert_thresholds="50")
    spend_calls(client, secret, 1)
    assert not BudgetAlert.objects.exists()  # queued with its row, not yet written
    recording.flush()
    work_off()
    assert BudgetAlert.objects.get().state == "sent" and len(receiver.verified) == 1


@pytest.mark.slow
@pytest.mark.parametrize("server_count", SERVERS)
def test_concurrent_calls_at_several_instances_cross_each_threshold_once(stack, server_count):  # noqa: F811
    """30 calls at once at the instances (sharing Redis), then one at a time until refused: the
    spend crosses 50, 80 and 100 % of the budget and each is recorded exactly once, by the one call
    whose cost carried the shared counter past it."""
    cluster, upstream = stack
    key_id, secret = budgeted_key(cluster, upstream)
    urls = [cluster.start().url for _ in range(server_count)]
    headers = {"Authorization": f"Bearer {secret}"}

    def one(n: int) -> int:
        url = urls[n % len(urls)] + "/v1/chat/completions"
        return requests.post(url, json=BODY, headers=headers, timeout=30).status_code

    with ThreadPoolExecutor(30) as pool:
        statuses = list(pool.map(one, range(30)))
    for n in range(20):
        statuses.append(one(n))
        if statuses[-1] == 429:
            break
    assert statuses[-1] == 429
    code = (
        "from routes_admin.models import BudgetAlert, RequestLog\n"
        f"alerts = list(BudgetAlert.objects.filter(owner_id={key_id}).values_list('threshold', 'request_id'))\n"
        "crossing = [r.request_id for r in RequestLog.objects.all() for _ in r.detail.get('budget_alerts', ())]\n"
        f"rows = RequestLog.objects.filter(api_key_id={key_id}).count()\n"
        "print(json.dumps([sorted(alerts), sorted(crossing), rows]))"
    )
    for _ in range(30):  # rows (and their alerts) are written in batches every GATEWAY_LOG_FLUSH_SECONDS
        found, crossing, rows = shell_json(cluster, code)
        if rows == len(statuses):
            break
        time.sleep(0.3)
    assert rows == len(statuses)
    assert [threshold for threshold, _ in found] == [50, 80, 100]
    assert sorted(request_id for _, request_id in found) == crossing  # each by the call that crossed it
