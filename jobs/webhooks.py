"""Webhooks: a finished job POSTed to its X-Callback-URL, signed, retried with backoff.

Where it may go is jobs/callbacks.py: the URL is checked at submission (400 otherwise) and again
before each attempt (the allow-list may have changed; rows may predate the check); it is sent
to the URL rebuilt from the checked parts, over a connection to the addresses checked just
before (proxy/pinning.py), never following a redirect. Each POST carries

    X-Gateway-Timestamp: <unix seconds>
    X-Gateway-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>\n<callback URL>\n<body>">

with the job's API key's own signing secret (jobs/signing.py), so a receiver recomputes it,
compares in constant time and refuses old timestamps (replays). Every attempt is a
WebhookDelivery row: the key sees delivered or not and the receiver's HTTP status; the network
detail (refused, timed out, unresolvable) is for operators (the admin, the server log). A failed
attempt (no answer, or not 2xx) is retried after GATEWAY_WEBHOOK_BACKOFF_SECONDS * 2^(attempt-1),
up to GATEWAY_WEBHOOK_MAX_ATTEMPTS, through the queue (a worker restart loses no delivery); a URL
that the check now refuses is not tried again.
"""

import json
import logging
import time
from datetime import timedelta

import requests
from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django_tasks import task

from proxy.jobs_api import InvalidRequest, PinnedAdapter, host_key
from routes_admin import callbacks

from . import signing
from .documents import job_document
from .models import Job, WebhookDelivery
from .outages import keep

WEBHOOK_QUEUE = "webhooks"  # the django-tasks queue of webhook deliveries

log = logging.getLogger("gateway.webhooks")


def check_url(url: str) -> str:
    """The callback URL as it will be stored, sent and signed; 400 (InvalidRequest) when refused."""
    try:
        return callbacks.parse(url).url
    except callbacks.Refused as exc:
        raise InvalidRequest(str(exc)) from None


def pinned_lookup(callback: callbacks.Callback, addresses: list[str]):
    """`addresses_for(host)` for proxy/pinning.py: the checked addresses for the callback's host,
    OSError (no connection) for any other host a client library might read from the URL."""
    checked = host_key(callback.host)

    def addresses_for(host: str) -> list[str]:
        if host_key(host) != checked:
            raise OSError(f"refusing to connect to {host}: not the checked callback host")
        return addresses

    return addresses_for


def post(callback: callbacks.Callback, body: bytes, headers: dict) -> int:
    """POST to the checked callback; the receiver's HTTP status.

    The connection goes only to the addresses checked now for the callback's host (any other
    host a client library might derive from the URL is refused). Raises callbacks.Refused, or
    OSError / requests.RequestException when no HTTP answer came.
    """
    with requests.Session() as session:
        session.trust_env = False  # no proxy or .netrc from the environment
        adapter = PinnedAdapter(max_retries=0, addresses_for=pinned_lookup(callback, callbacks.addresses(callback)))
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        # Redirects are not followed: only the checked receiver gets the result. The answer's
        # body is never read (stream=True): only its status matters.
        response = session.post(
            callback.url,
            data=body,
            headers=headers,
            timeout=settings.GATEWAY_WEBHOOK_TIMEOUT,
            allow_redirects=False,
            stream=True,
        )
        response.close()
        return response.status_code


def backoff(attempt: int) -> float:
    """Seconds before attempt number `attempt` + 1."""
    return settings.GATEWAY_WEBHOOK_BACKOFF_SECONDS * 2 ** (attempt - 1)


def schedule(job: Job, attempt: int = 1, delay: float = 0.0) -> None:
    task = deliver_webhook
    if delay > 0:
        task = task.using(run_after=timezone.now() + timedelta(seconds=delay))
    task.enqueue(str(job.id), attempt)


@task(queue_name=WEBHOOK_QUEUE)
def deliver_webhook(job_id: str, attempt: int) -> None:
    """The queue's task (django-tasks, database backend): one delivery attempt of a job's webhook."""
    deliver(job_id, attempt)


def deliver(job_id: str, attempt: int) -> None:
    """One delivery attempt; schedules the next one when it fails and attempts are left."""
    job = Job.objects.filter(id=job_id).first()
    if job is None or not job.callback_url:
        return  # pruned meanwhile
    if job.deliveries.filter(attempt=attempt).exists():
        return  # a worker recorded this attempt and died before its task was marked done
    body = json.dumps(job_document(job)).encode()
    started = time.perf_counter()
    status, error, final = None, "", False
    try:
        callback = callbacks.parse(job.callback_url)
        secret = signing.secret_for_key(job.api_key_id)
        if secret is None:
            return  # its key was deleted meanwhile (and its jobs with it)
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "ai-gateway-webhook",
            "X-Gateway-Job-ID": str(job.id),
            "X-Gateway-Delivery": str(attempt),
            "X-Gateway-Timestamp": timestamp,
            "X-Gateway-Signature": signing.signature(secret, timestamp, callback.url, body),
        }
        status = post(callback, body, headers)
    except callbacks.Refused as exc:
        error, final = f"refused: {exc}"[:500], True
    except (OSError, requests.RequestException) as exc:
        error = f"{type(exc).__name__}: {exc}"[:500]
    # Written even when the database went away during the POST (the receiver has it): a delivery
    # not recorded would be sent again by another worker.
    keep(f"webhook of job {job.id}", record, job, attempt, status, error, final, time.perf_counter() - started)


def record(job: Job, attempt: int, status: int | None, error: str, final: bool, seconds: float) -> None:
    """The attempt's record, and the next attempt when it failed: they commit together."""
    with transaction.atomic():
        delivery = WebhookDelivery.objects.create(
            job=job,
            attempt=attempt,
            created=timezone.now(),
            status=status,
            error=error,
            duration_ms=round(seconds * 1000, 3),
        )
        if delivery.delivered:
            return
        if not final and attempt < settings.GATEWAY_WEBHOOK_MAX_ATTEMPTS:
            log.info(
                "webhook of job %s failed (%s); attempt %d in %.1f s",
                job.id,
                status or error,
                attempt + 1,
                backoff(attempt),
            )
            schedule(job, attempt + 1, backoff(attempt))
        else:
            log.warning(
                "webhook of job %s failed (%s) after %d attempt(s); giving up", job.id, status or error, attempt
            )
