"""Webhooks: a finished job POSTed to its X-Callback-URL, signed, retried with backoff.

Only hosts on GATEWAY_WEBHOOK_HOSTS are allowed (checked at submission: 400 otherwise). Each
POST carries

    X-Gateway-Timestamp: <unix seconds>
    X-Gateway-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<body>" with GATEWAY_WEBHOOK_SECRET>

so a receiver recomputes the HMAC over the timestamp, a dot and the raw body, compares in
constant time, and refuses old timestamps (replays). Every attempt is a WebhookDelivery row,
shown on the job; a failed attempt (no answer, or not 2xx) is retried after
GATEWAY_WEBHOOK_BACKOFF_SECONDS * 2^(attempt-1), up to GATEWAY_WEBHOOK_MAX_ATTEMPTS, through
the queue (so a worker restart loses no delivery).
"""

import hashlib
import hmac
import json
import logging
import time
from datetime import timedelta
from urllib.parse import urlsplit

import requests
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from proxy.errors import InvalidRequest

from .documents import job_document
from .models import Job, WebhookDelivery

log = logging.getLogger("gateway.webhooks")
_session: requests.Session | None = None


def session() -> requests.Session:
    global _session
    if _session is None:
        _session = requests.Session()
        _session.trust_env = False  # no proxy or .netrc from the environment
    return _session


def check_url(url: str) -> str:
    """The callback URL if its host is allowed; else 400 (InvalidRequest)."""
    parts = urlsplit(url)
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        host = None
    if parts.scheme not in ("http", "https") or not host:
        raise InvalidRequest("X-Callback-URL must be an absolute http(s) URL.")
    allowed = {h.lower() for h in settings.GATEWAY_WEBHOOK_HOSTS}
    if host.lower() not in allowed and f"{host.lower()}:{port}" not in allowed:
        raise InvalidRequest(f"X-Callback-URL: the host {host} is not on this gateway's webhook allow-list.")
    return url


def sign(secret: str, timestamp: str, body: bytes) -> str:
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def backoff(attempt: int) -> float:
    """Seconds before attempt number `attempt` + 1."""
    return settings.GATEWAY_WEBHOOK_BACKOFF_SECONDS * 2 ** (attempt - 1)


def schedule(job: Job, attempt: int = 1, delay: float = 0.0) -> None:
    from .tasks import deliver_webhook

    task = deliver_webhook
    if delay > 0:
        task = task.using(run_after=timezone.now() + timedelta(seconds=delay))
    task.enqueue(str(job.id), attempt)


def deliver(job_id: str, attempt: int) -> None:
    """One delivery attempt; schedules the next one when it fails and attempts are left."""
    job = Job.objects.filter(id=job_id).first()
    if job is None or not job.callback_url:
        return  # pruned meanwhile
    if job.deliveries.filter(attempt=attempt).exists():
        return  # a worker recorded this attempt and died before its task was marked done
    body = json.dumps(job_document(job)).encode()
    timestamp = str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "ai-gateway-webhook",
        "X-Gateway-Job-ID": str(job.id),
        "X-Gateway-Delivery": str(attempt),
        "X-Gateway-Timestamp": timestamp,
        "X-Gateway-Signature": sign(settings.GATEWAY_WEBHOOK_SECRET, timestamp, body),
    }
    started = time.perf_counter()
    status, error = None, ""
    try:
        # Redirects are not followed: only the allowed host receives the result.
        response = session().post(
            job.callback_url,
            data=body,
            headers=headers,
            timeout=settings.GATEWAY_WEBHOOK_TIMEOUT,
            allow_redirects=False,
        )
        status = response.status_code
        response.close()
    except requests.RequestException as exc:
        error = f"{type(exc).__name__}: {exc}"[:500]
    with transaction.atomic():  # the attempt's record and the next attempt commit together
        delivery = WebhookDelivery.objects.create(
            job=job,
            attempt=attempt,
            created=timezone.now(),
            status=status,
            error=error,
            duration_ms=round((time.perf_counter() - started) * 1000, 3),
        )
        if delivery.delivered:
            return
        if attempt < settings.GATEWAY_WEBHOOK_MAX_ATTEMPTS:
            log.info(
                "webhook of job %s failed (%s); attempt %d in %.1f s",
                job.id,
                status or error,
                attempt + 1,
                backoff(attempt),
            )
            schedule(job, attempt + 1, backoff(attempt))
        else:
            log.warning("webhook of job %s failed %d times; giving up", job.id, attempt)
