"""Submission: a call the pipeline has authenticated, matched, permitted and admitted becomes a job.

The pipeline calls submit() (registered in JobsConfig.ready) instead of forwarding when the
client sent `Prefer: respond-async` or the route's processing mode is `async`. The job's row is
its queue entry (jobs/queue.py): if the database cannot take it, nothing is queued and the client
gets 503.
"""

import json
import logging
import uuid

from django.conf import settings
from django.db import DatabaseError, IntegrityError, transaction
from django.utils import timezone

from proxy import jobs_api
from proxy.jobs_api import GatewayError, Incoming, InvalidRequest, RateLimited
from routes_admin.models import APIKey, ErrorType

from . import webhooks
from .documents import job_document
from .models import UNFINISHED, Job

log = logging.getLogger("gateway.jobs")

# Never stored with a job: the client's credentials, and what only the submission itself uses.
NOT_STORED = frozenset({"authorization", "x-api-key", "cookie", "prefer", "idempotency-key", "x-callback-url"})
MAX_IDEMPOTENCY_KEY = 255
MAX_PATH = 2000  # Job.path and Job.raw_path
MAX_HOST = 255  # Job.host
MAX_METHOD = 10  # Job.method (a route with no methods listed allows any)


class QueueUnavailable(GatewayError):
    status_code = 503
    error_type = ErrorType.SERVICE_UNAVAILABLE
    default_detail = "The job queue is unavailable right now; nothing was queued. Try again shortly."


class IdempotencyKeyReused(GatewayError):
    """The Idempotency-Key named an earlier job whose request was another one: answering with that
    job would hand the client a result for a request it did not send."""

    status_code = 422
    error_type = ErrorType.INVALID_REQUEST
    default_detail = (
        "This Idempotency-Key was already used for a different request (method, path, query or body); "
        "use a new key for a new request."
    )


class PathTooLong(GatewayError):
    status_code = 414
    error_type = ErrorType.INVALID_REQUEST
    default_detail = f"A job's path is at most {MAX_PATH} characters; send a longer one without Prefer: respond-async."


class Accepted:
    """The 202 answer, shaped like the pipeline's Answer: iterate for the body; close() ends the call."""

    status = 202
    reason = "Accepted"

    def __init__(self, call, job: Job, replayed: bool):
        self.call = call
        self.body = json.dumps(job_document(job)).encode()
        self.headers = [("Content-Type", "application/json"), ("Location", f"/jobs/{job.id}")]
        if replayed:
            self.headers.append(("Idempotent-Replayed", "true"))
        if call.admission is not None:  # what the key has left, as on any admitted call
            self.headers += jobs_api.answer_headers(call.admission)
        call.status = 202
        call.bytes_out = len(self.body)
        call.detail["job"] = str(job.id)  # the submission's log row names its job (console: both ways)

    def __iter__(self):
        yield self.body

    def close(self) -> None:
        jobs_api.finish(self.call)


def check(incoming: Incoming) -> None:
    """Refuse (4xx) what a job could not store or use, before the call is admitted and counted:
    so a refused submission costs the key nothing and leaves no job."""
    callback = incoming.headers.get("X-Callback-URL", "").strip()
    if callback:
        webhooks.check_url(callback)
    if len(incoming.headers.get("Idempotency-Key", "").strip()) > MAX_IDEMPOTENCY_KEY:
        raise InvalidRequest(f"Idempotency-Key is longer than {MAX_IDEMPOTENCY_KEY} characters.")
    if len(incoming.path) > MAX_PATH or len(incoming.raw_path) > MAX_PATH:
        raise PathTooLong()
    if len(incoming.method) > MAX_METHOD:
        raise InvalidRequest(f"A job's method is at most {MAX_METHOD} characters.")
    if len(incoming.host) > MAX_HOST:
        raise InvalidRequest(f"A job's Host header is at most {MAX_HOST} characters.")


def submit(call, incoming: Incoming, body: bytes) -> Accepted:
    """Queue the call (or find the job its Idempotency-Key already made): the 202 answer.
    `check(incoming)` has passed (the pipeline runs it before admission)."""
    callback = incoming.headers.get("X-Callback-URL", "").strip()
    if callback:
        callback = webhooks.check_url(callback)  # stored as rebuilt from its checked parts
    idempotency_key = incoming.headers.get("Idempotency-Key", "").strip()
    try:
        # A database that is away answers 503 within GATEWAY_CONFIG_DB_TIMEOUT, not the pool's
        # DATABASE_POOL_TIMEOUT (10 s), which also held a stopping worker that long.
        jobs_api.connect_database(settings.GATEWAY_CONFIG_DB_TIMEOUT)
        job, replayed = create(call, incoming, body, callback, idempotency_key)
    except IntegrityError:
        # The same Idempotency-Key submitted twice at once: the other submission made the job.
        job, replayed = Job.objects.get(api_key_id=call.key.id, idempotency_key=idempotency_key), True
        if not same_request(job, incoming, body):
            raise IdempotencyKeyReused() from None
    except DatabaseError:
        log.exception("could not queue call %s", call.request_id)
        raise QueueUnavailable() from None
    return Accepted(call, job, replayed)


def queue_cap(key) -> int:
    """Jobs the key may have waiting or running: its plan's (or its own) max_queued_jobs, else the default."""
    cap = key.limits.get("max_queued_jobs")
    return settings.GATEWAY_JOB_MAX_QUEUED if cap is None else cap


def check_queue_cap(key) -> None:
    """Refuse (429) a job over the key's cap. Called in the transaction that creates the job."""
    cap = queue_cap(key)
    # The key's row is locked so that concurrent submissions count one after another (PostgreSQL;
    # SQLite's write transactions already do).
    APIKey.objects.select_for_update().filter(id=key.id).values_list("id").first()
    if Job.objects.filter(api_key_id=key.id, status__in=UNFINISHED).count() >= cap:
        raise RateLimited(
            f"This API key already has {cap} jobs waiting or running, its limit (max_queued_jobs); "
            "retry when one finishes.",
            headers={"Retry-After": str(max(1, round(settings.GATEWAY_JOB_WAIT_SECONDS)))},
            limit="max_queued_jobs",
        )


def same_request(job: Job, incoming, body: bytes) -> bool:
    """Whether a replayed Idempotency-Key comes with the request that made its job."""
    return (
        job.method == incoming.method
        and job.path == incoming.path
        and job.query == incoming.query
        and bytes(job.body) == body
    )


def create(call, incoming, body: bytes, callback: str, idempotency_key: str) -> tuple[Job, bool]:
    now = timezone.now()
    with transaction.atomic():
        if idempotency_key:
            earlier = Job.objects.filter(api_key_id=call.key.id, idempotency_key=idempotency_key).first()
            if earlier is not None:
                if (now - earlier.created).total_seconds() < settings.GATEWAY_JOB_IDEMPOTENCY_SECONDS:
                    if not same_request(earlier, incoming, body):
                        raise IdempotencyKeyReused()
                    return earlier, True
                earlier.idempotency_key = ""  # its window is over: the key may name a new job
                earlier.save(update_fields=["idempotency_key"])
        check_queue_cap(call.key)
        job = Job.objects.create(
            id=uuid.uuid4(),
            api_key_id=call.key.id,
            route_id=call.route.id,
            route_name=call.route.name,
            created=now,
            due=now,
            idempotency_key=idempotency_key,
            callback_url=callback,
            request_id=call.request_id,
            method=incoming.method,
            path=incoming.path,
            raw_path=incoming.raw_path,
            query=incoming.query,
            headers={name: value for name, value in incoming.headers.items() if name.lower() not in NOT_STORED},
            body=body,
            client_ip=incoming.client_ip,
            scheme=incoming.scheme,
            host=incoming.host,
        )
    return job, False
