"""A worker runs one job: send it through the pipeline, keep the answer.

    claim  -> queued to running, fairly across keys, under the route's job cap (jobs/queue.py)
    run    -> pipeline.run_job: forward (retries, fallback, breakers), count tokens, log row
    finish -> the upstream's answer stored whole (up to GATEWAY_JOB_MAX_ANSWER_BYTES); the webhook scheduled

Outcomes other than an answer:
- every target's breaker open (503 CircuitOpen): the job waits (queued again, no attempt used)
  until the earliest cooldown ends;
- the upstream unreachable or too slow after the route's own retries (502/504), or its stream
  broken: another attempt later, up to GATEWAY_JOB_MAX_ATTEMPTS;
- an answer larger than GATEWAY_JOB_MAX_ANSWER_BYTES: failed at once (no retry: a second run
  would read the same answer), reading stopped at the limit;
- anything else the gateway refuses (key revoked, route gone, ...): failed at once, with why.
An answer is kept by the first run to finish (a worker whose lease lapsed may still finish
first); failures and requeues apply only while this worker still holds the job (leases.py).

A run's outcome that cannot be written because the database is away is kept, and written once
the database answers (jobs/outages.py): the job is not run again, which would call the upstream
twice.
"""

import logging

from django.conf import settings
from requests.structures import CaseInsensitiveDict

from proxy.jobs_api import CircuitOpen, GatewayError, Incoming, UpstreamTimeout, UpstreamUnavailable, run_job
from routes_admin.models import ErrorType

from . import leases
from .models import Job
from .outages import keep
from .outcomes import fail, give_back, succeed

log = logging.getLogger("gateway.jobs")
ANSWER_TOO_LARGE = "upstream_answer_too_large"


class WorkerStopping(BaseException):
    """Raised in a job still running when the worker's shutdown timeout ends (jobs_worker)."""


def run(job: Job, worker: str) -> None:
    """Run a job that jobs/queue.py claimed for this worker."""
    leases.hold(job.id)
    try:
        execute(job, worker)
    finally:
        leases.let_go(job.id)


def incoming(job: Job) -> Incoming:
    return Incoming(
        method=job.method,
        path=job.path,
        query=job.query,
        headers=CaseInsensitiveDict(job.headers),
        body=bytes(job.body),
        raw_path=job.raw_path,
        client_ip=job.client_ip,
        request_id=job.request_id,
        scheme=job.scheme,
        host=job.host,
    )


def execute(job: Job, worker: str) -> None:
    queued_ms = (job.started - job.created).total_seconds() * 1000
    try:
        answer = run_job(
            incoming(job), key_id=job.api_key_id, route_id=job.route_id, job_id=str(job.id), queued_ms=queued_ms
        )
        try:
            body = read_answer(answer, settings.GATEWAY_JOB_MAX_ANSWER_BYTES)
        finally:
            answer.close()
    except CircuitOpen as exc:
        wait = retry_after_seconds(exc.headers.get("Retry-After", "1"))
        log.info("job %s waits %.0f s: every target of its route is failing", job.id, wait)
        keep(f"job {job.id}", give_back, job, worker, wait, used_attempt=False)
        return
    except (UpstreamUnavailable, UpstreamTimeout) as exc:
        keep(f"job {job.id}", retry_or_fail, job, worker, f"{exc.status_code} {exc.error_type}: {exc.detail}")
        return
    except GatewayError as exc:
        keep(f"job {job.id}", fail, job, f"{exc.status_code} {exc.error_type}: {exc.detail}", worker=worker)
        return
    except WorkerStopping:
        give_back(job, worker, 0, used_attempt=True)
        raise
    except Exception as exc:  # a bug, or the database gone mid-run: another attempt, with the reason
        log.exception("job %s: run failed", job.id)
        keep(f"job {job.id}", retry_or_fail, job, worker, f"500 internal_error: {type(exc).__name__}")
        return
    if body is None:  # another run would read the same endless answer: fail now, with why
        limit = settings.GATEWAY_JOB_MAX_ANSWER_BYTES
        keep(
            f"job {job.id}",
            fail,
            job,
            f"502 {ANSWER_TOO_LARGE}: the upstream's answer is larger than this gateway keeps for a job "
            f"(GATEWAY_JOB_MAX_ANSWER_BYTES, {limit} bytes); reading stopped there and the job is not retried.",
            worker=worker,
        )
        return
    if answer.call.error_type == ErrorType.UPSTREAM_STREAM_ERROR:
        keep(f"job {job.id}", retry_or_fail, job, worker, "502 upstream_stream_error: the upstream stopped mid-answer.")
        return
    keep(f"job {job.id}", succeed, job, answer.status, answer.headers, body)
    log.info(
        "job %s ran: model %s, route %s, answered %s after %.0f ms in the queue",
        job.id,
        answer.call.model or "-",
        job.route_name,
        answer.status,
        queued_ms,
    )


def read_answer(answer, limit: int) -> bytes | None:
    """The answer's body, or None once it passes `limit` bytes (nothing more is read: the
    connection is dropped when the answer closes, so memory stays within about `limit`)."""
    body = bytearray()
    for chunk in answer:
        body += chunk
        if len(body) > limit:
            answer.call.error_type = ANSWER_TOO_LARGE  # for the run's log row
            return None
    return bytes(body)


def retry_or_fail(job: Job, worker: str, reason: str) -> None:
    if job.attempts >= settings.GATEWAY_JOB_MAX_ATTEMPTS:
        fail(job, f"{reason} (attempt {job.attempts} of {settings.GATEWAY_JOB_MAX_ATTEMPTS})", worker=worker)
    else:
        log.info("job %s: attempt %d failed (%s); queued again", job.id, job.attempts, reason)
        give_back(job, worker, settings.GATEWAY_JOB_WAIT_SECONDS * 2 ** (job.attempts - 1), used_attempt=True)


def retry_after_seconds(value: str) -> float:
    try:
        return max(0.0, float(value))
    except ValueError:
        return 1.0
