"""At-least-once delivery: the small layer added on top of django-tasks' database backend.

The engine marks a task RUNNING when a worker claims it and never looks at it again: a worker
killed with SIGKILL leaves it RUNNING for ever. So a running job holds a lease
(Job.lease_until) that its worker's keeper thread renews every third of
GATEWAY_JOB_LEASE_SECONDS. Every worker's keeper also looks for running jobs whose lease ran
out: such a job goes back to the queue (a new entry; the lost one is closed as failed) while it
has attempts left, else it fails with the reason. So a job whose worker died runs
again within GATEWAY_JOB_LEASE_SECONDS plus one keeper period, on any live worker.
"""

import logging
import threading
from datetime import timedelta

from django.conf import settings
from django.db import close_old_connections, transaction
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from .models import Job, Status

log = logging.getLogger("gateway.jobs")
_held: set = set()  # ids of the jobs this process is running
_lock = threading.Lock()


def hold(job_id) -> None:
    with _lock:
        _held.add(job_id)


def let_go(job_id) -> None:
    with _lock:
        _held.discard(job_id)


def renew(worker: str) -> None:
    with _lock:
        held = list(_held)
    if held:
        until = timezone.now() + timedelta(seconds=settings.GATEWAY_JOB_LEASE_SECONDS)
        Job.objects.filter(id__in=held, status=Status.RUNNING, worker=worker).update(lease_until=until)


def recover_lost(now=None) -> int:
    """Queue again (or fail) the running jobs whose worker stopped renewing their lease."""
    from .running import fail, requeue  # running imports this module

    now = now or timezone.now()
    recovered = 0
    with transaction.atomic():
        lost = list(
            Job.objects.select_for_update(skip_locked=True).filter(status=Status.RUNNING, lease_until__lt=now)[:100]
        )
        for job in lost:
            recovered += 1
            if job.attempts >= settings.GATEWAY_JOB_MAX_ATTEMPTS:
                transaction.on_commit(
                    lambda job=job: fail(
                        job,
                        f"Its worker ({job.worker}) stopped answering during attempt {job.attempts} "
                        f"of {settings.GATEWAY_JOB_MAX_ATTEMPTS}; no attempts left.",
                    )
                )
                continue
            log.warning("job %s: worker %s lost during attempt %d; queued again", job.id, job.worker, job.attempts)
            Job.objects.filter(id=job.id).update(status=Status.QUEUED, lease_until=None)
            # The lost run's entry is closed (the engine would show it running for ever) and a
            # new one queued: a worker that was only slow may still write its old entry.
            DBTaskResult.objects.filter(id=job.task_id, status="RUNNING").update(
                status="FAILED", finished_at=now, exception_class_path="jobs.leases.WorkerLost", traceback=""
            )
            requeue(str(job.id), 0)
    return recovered


class Keeper(threading.Thread):
    """Renews this worker's leases and recovers lost jobs, every third of the lease."""

    def __init__(self, worker: str):
        super().__init__(name="jobs-lease-keeper", daemon=True)
        self.worker = worker
        self.stopping = threading.Event()

    def run(self) -> None:
        period = settings.GATEWAY_JOB_LEASE_SECONDS / 3
        while True:  # a check at start too: a worker started after a crash recovers its jobs at once
            try:
                renew(self.worker)
                recover_lost()
            except Exception:
                log.exception("lease keeper: the database is unreachable; trying again in %.1f s", period)
            finally:
                close_old_connections()
            if self.stopping.wait(period):
                return
