"""Budget alerts sent: to a webhook and/or by email, the owner's own (a key's, team's or route's
alert_webhook / alert_emails) or else the gateway's (GATEWAY_BUDGET_ALERT_WEBHOOK / _EMAILS).

The log writer records an alert with the call that crossed its threshold (proxy/alerts.py) and
hands it to `schedule`, the hook this app adds to every process's runtime (JobsConfig), which
queues its first attempt in the writer's transaction. Each attempt is a `deliver_alert` task on
the webhook queue (django-tasks' database backend), run by `manage.py jobs_worker` beside the job
webhooks, so a worker restart loses no alert.

- webhook: the job webhooks' own checks and sender: the URL must be on GATEWAY_WEBHOOK_HOSTS and
  in the plain form jobs/callbacks.py accepts, it is checked again before each attempt, and the
  POST goes over a connection pinned to the addresses checked, never following a redirect
  (jobs/webhooks.post). It is signed the same way (X-Gateway-Timestamp, X-Gateway-Signature:
  jobs/signing.py) with the alerts' secret, derived from GATEWAY_WEBHOOK_SECRET.
- email: Django's send_mail through the mail settings (EMAIL_HOST, ...), from DEFAULT_FROM_EMAIL.

A channel that delivered is not tried again. While one has not, the alert is tried again after
GATEWAY_WEBHOOK_BACKOFF_SECONDS * 2^(attempt-1), up to GATEWAY_WEBHOOK_MAX_ATTEMPTS attempts; a
webhook URL the check refuses is not tried again. The alert's row says how it went (state,
attempts, the receiver's status, when each channel delivered, the last error): the console lists
it, and the key's and team's pages show their own.
"""

import json
import logging
import smtplib
import time
from datetime import timedelta

import requests
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.core.mail import send_mail
from django.db import transaction
from django.utils import timezone
from django_tasks import task

from routes_admin import callbacks
from routes_admin.models import APIKey, BudgetAlert, Route, Team
from routes_admin.pricing import parse_emails, plain

from . import signing, webhooks

log = logging.getLogger("gateway.alerts")
PERIOD_WORDS = {"budget_per_day": "daily", "budget_per_month": "monthly"}
OWNERS = {BudgetAlert.Scope.KEY: APIKey, BudgetAlert.Scope.TEAM: Team, BudgetAlert.Scope.ROUTE: Route}


def destinations(alert: BudgetAlert) -> tuple[str, list[str]]:
    """(webhook URL, email addresses) of the alert: for each channel, what its key, team or route
    sets, else the gateway's; read at each attempt, so a destination changed after a failed
    attempt is the one tried next. An owner deleted since gets the gateway's."""
    owner = OWNERS[alert.scope].objects.filter(id=alert.owner_id).values("alert_webhook", "alert_emails").first()
    owner = owner or {"alert_webhook": "", "alert_emails": ""}
    url = owner["alert_webhook"] or settings.GATEWAY_BUDGET_ALERT_WEBHOOK
    try:
        recipients = parse_emails(owner["alert_emails"]) or settings.GATEWAY_BUDGET_ALERT_EMAILS
    except ValidationError:  # saved before a rule changed: the gateway's rather than none
        recipients = settings.GATEWAY_BUDGET_ALERT_EMAILS
    return url, list(recipients)


def summary(alert: BudgetAlert) -> str:
    """One sentence: who spent how much of which budget."""
    period = PERIOD_WORDS.get(alert.budget, alert.budget)
    return (
        f"The {alert.scope} {alert.owner_name} has spent {plain(alert.spent)} {settings.GATEWAY_CURRENCY}, "
        f"crossing {alert.threshold} % of its {period} budget of {plain(alert.amount)} "
        f"{settings.GATEWAY_CURRENCY} ({alert.period} starting {alert.period_start.isoformat()})."
    )


def document(alert: BudgetAlert) -> dict:
    """What the webhook receives (JSON)."""
    return {
        "type": "budget.threshold_crossed",
        "id": alert.id,
        "scope": alert.scope,
        "owner": {"id": alert.owner_id, "name": alert.owner_name},
        "budget": alert.budget,
        "period": alert.period,
        "period_start": alert.period_start.isoformat(),
        "threshold_percent": alert.threshold,
        "amount": plain(alert.amount),
        "spent": plain(alert.spent),
        "currency": settings.GATEWAY_CURRENCY,
        "crossed_at": alert.created.isoformat(),
        "request_id": alert.request_id,
        "text": summary(alert),
    }


def schedule(alert_ids, attempt: int = 1, delay: float = 0.0) -> None:
    """Queue an attempt for each alert (the runtime's alert sender: proxy/alerts.py calls it)."""
    queued = deliver_alert
    if delay > 0:
        queued = queued.using(run_after=timezone.now() + timedelta(seconds=delay))
    for alert_id in alert_ids:
        queued.enqueue(int(alert_id), attempt)


@task(queue_name=webhooks.WEBHOOK_QUEUE)
def deliver_alert(alert_id: int, attempt: int) -> None:
    """The queue's task: one attempt at sending a budget alert."""
    deliver(alert_id, attempt)


def post_webhook(alert: BudgetAlert, url: str) -> int:
    """POST the alert to the checked URL, signed; the receiver's status. Raises callbacks.Refused,
    ImproperlyConfigured (no signing secret), OSError or requests.RequestException."""
    callback = callbacks.parse(url)
    body = json.dumps(document(alert)).encode()
    timestamp = str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "ai-gateway-webhook",
        "X-Gateway-Alert-ID": str(alert.id),
        "X-Gateway-Delivery": str(alert.attempts + 1),
        "X-Gateway-Timestamp": timestamp,
        "X-Gateway-Signature": signing.signature(signing.alert_secret(), timestamp, callback.url, body),
    }
    return webhooks.post(callback, body, headers)


def send_email(alert: BudgetAlert, recipients: list[str]) -> None:
    period = PERIOD_WORDS.get(alert.budget, alert.budget)
    subject = f"[AI gateway] {alert.scope} {alert.owner_name}: {alert.threshold} % of the {period} budget spent"
    body = f"{summary(alert)}\n\nThe call that crossed it: request id {alert.request_id or 'unknown'}.\n"
    send_mail(subject, body, None, recipients, fail_silently=False)


def deliver(alert_id: int, attempt: int) -> None:
    """One attempt on every channel not delivered yet; the next one queued when one failed and
    attempts are left."""
    alert = BudgetAlert.objects.filter(id=alert_id).first()
    if alert is None or alert.state != BudgetAlert.State.PENDING or alert.attempts >= attempt:
        return  # gone, done, or this attempt was made by a worker that died before marking its task done
    url, recipients = destinations(alert)
    errors, final = [], False
    if url and alert.webhook_sent is None:
        try:
            alert.webhook_status = post_webhook(alert, url)
        except (callbacks.Refused, ImproperlyConfigured) as exc:
            errors.append(f"webhook refused: {exc}")
            final = True
        except (OSError, requests.RequestException) as exc:
            errors.append(f"webhook: {type(exc).__name__}: {exc}")
        else:
            if 200 <= alert.webhook_status < 300:
                alert.webhook_sent = timezone.now()
            else:
                errors.append(f"webhook: the receiver answered {alert.webhook_status}")
    if recipients and alert.email_sent is None:
        try:
            send_email(alert, recipients)
        except (smtplib.SMTPException, OSError) as exc:
            errors.append(f"email: {type(exc).__name__}: {exc}")
        else:
            alert.email_sent = timezone.now()
    alert.attempts = attempt
    alert.error = "; ".join(errors)[:500]
    delivered = (not url or alert.webhook_sent) and (not recipients or alert.email_sent)
    with transaction.atomic():  # the attempt's outcome and the next attempt commit together
        if not url and not recipients:
            alert.state = BudgetAlert.State.UNSENT
        elif delivered:
            alert.state = BudgetAlert.State.SENT
        elif final or attempt >= settings.GATEWAY_WEBHOOK_MAX_ATTEMPTS:
            alert.state = BudgetAlert.State.FAILED
            log.warning("budget alert %s not sent after %d attempt(s): %s", alert.id, attempt, alert.error)
        else:
            log.info(
                "budget alert %s not sent (%s); attempt %d in %.1f s",
                alert.id,
                alert.error,
                attempt + 1,
                webhooks.backoff(attempt),
            )
            schedule([alert.id], attempt + 1, webhooks.backoff(attempt))
        alert.save(update_fields=["state", "attempts", "webhook_status", "webhook_sent", "email_sent", "error"])
