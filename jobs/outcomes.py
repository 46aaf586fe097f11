"""How a job's run ends: its answer kept, its final failure, or back in the queue.

The worker (jobs/running.py) and the lease keeper (jobs/leases.py, for jobs whose worker was
lost) both end jobs here; a job that ends with a callback URL has its webhook scheduled in the
same transaction (jobs/webhooks.py).
"""

import logging
from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from . import webhooks
from .models import FINAL, Job, Status

log = logging.getLogger("gateway.jobs")


def _mine(job: Job, worker: str):
    return Job.objects.filter(id=job.id, status=Status.RUNNING, worker=worker)


def succeed(job: Job, status: int, headers: list, body: bytes) -> None:
    # The first run to finish wins, even when this worker's lease lapsed and the job was queued
    # again (or is running elsewhere): its answer is as good, and the other run then finds it done.
    # The job's end and its webhook's first delivery commit together (or neither does).
    with transaction.atomic():
        done = (
            Job.objects.filter(id=job.id)
            .exclude(status__in=FINAL)
            .update(
                status=Status.SUCCEEDED,
                finished=timezone.now(),
                lease_until=None,
                response_status=status,
                response_headers=[list(pair) for pair in headers],
                response_body=body,
                error="",
            )
        )
        if done and job.callback_url:
            webhooks.schedule(job)


def fail(job: Job, reason: str, worker: str | None = None) -> None:
    """The job's final failure, with its reason. `worker`: only if that worker still holds it."""
    with transaction.atomic():
        rows = _mine(job, worker) if worker else Job.objects.filter(id=job.id).exclude(status__in=FINAL)
        done = rows.update(status=Status.FAILED, finished=timezone.now(), lease_until=None, error=reason)
        if done and job.callback_url:
            webhooks.schedule(job)
    log.warning("job %s failed: %s", job.id, reason)


def give_back(job: Job, worker: str, delay: float, used_attempt: bool) -> None:
    """Queue the job again, due in `delay` seconds, in its place (this worker's run of it ends)."""
    changes = {"status": Status.QUEUED, "lease_until": None, "due": timezone.now() + timedelta(seconds=delay)}
    if not used_attempt:
        changes["attempts"] = max(0, job.attempts - 1)
    _mine(job, worker).update(**changes)
