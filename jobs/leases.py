"""At-least-once: every piece of work a worker claims comes back if that worker dies.

- A running job holds a lease (Job.lease_until) that its worker's keeper thread renews every
  third of GATEWAY_JOB_LEASE_SECONDS. A job whose lease ran out goes back to the queue in its
  place (status queued, due now; its submission time, hence its turn, unchanged) while it has
  attempts left, else it fails with the reason.
- A webhook delivery is a django-tasks task, which the engine marks RUNNING when a worker claims
  it and never looks at again. So each worker's keeper also renews its heartbeat (WorkerBeat);
  a delivery claimed by a worker whose beat is older than the lease goes back to READY, where it
  was in the queue (the engine orders by due time and enqueue time, which do not change).
Every worker's keeper looks for both, at start and then every third of the lease: work whose
worker died runs again within GATEWAY_JOB_LEASE_SECONDS plus one keeper period, on any live worker.
After a database outage a keeper waits one lease before it looks: every lease lapsed during the
outage, and the live workers' keepers renew theirs in that time.
"""

import logging
import math
import threading
import time
from datetime import timedelta

from django.conf import settings
from django.db import close_old_connections, transaction
from django.db.models import F
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from proxy.jobs_api import connect_database

from .models import Job, Status, WorkerBeat
from .outcomes import fail
from .webhooks import WEBHOOK_QUEUE

log = logging.getLogger("gateway.jobs")
_held: set = set()  # ids of the jobs this process is running
_lock = threading.Lock()
FORGET_BEATS = timedelta(days=1)  # beats of workers gone this long are deleted


def hold(job_id) -> None:
    with _lock:
        _held.add(job_id)


def let_go(job_id) -> None:
    with _lock:
        _held.discard(job_id)


def lease() -> timedelta:
    return timedelta(seconds=settings.GATEWAY_JOB_LEASE_SECONDS)


def renew(worker: str, now=None) -> None:
    """This worker is alive: its beat, and the lease of every job it is running."""
    now = now or timezone.now()
    WorkerBeat.objects.update_or_create(worker=worker, defaults={"seen": now})
    with _lock:
        held = list(_held)
    if held:
        Job.objects.filter(id__in=held, status=Status.RUNNING, worker=worker).update(lease_until=now + lease())


def recover_lost(now=None) -> int:
    """Queue again (or fail) the running jobs whose worker stopped renewing their lease."""
    now = now or timezone.now()
    recovered = 0
    with transaction.atomic():
        lost = list(
            Job.objects.select_for_update(skip_locked=True).filter(status=Status.RUNNING, lease_until__lt=now)[:100]
        )
        for job in lost:
            recovered += 1
            if job.attempts >= settings.GATEWAY_JOB_MAX_ATTEMPTS:
                fail(
                    job,
                    f"Its worker ({job.worker}) stopped answering during attempt {job.attempts} "
                    f"of {settings.GATEWAY_JOB_MAX_ATTEMPTS}; no attempts left.",
                )
                continue
            log.warning("job %s: worker %s lost during attempt %d; queued again", job.id, job.worker, job.attempts)
            # Due at once and in its place: `created` (its turn) is unchanged.
            Job.objects.filter(id=job.id).update(status=Status.QUEUED, lease_until=None, due=F("created"))
    return recovered


def recover_deliveries(now=None) -> int:
    """Put back in the queue the webhook deliveries claimed by workers that stopped beating, and
    those claimed longer ago than a delivery can take: a live worker lost them (its database went
    away between the claim and the delivery's end, and the engine could not mark them)."""
    now = now or timezone.now()
    stale = now - lease()
    abandoned = stale - timedelta(seconds=settings.GATEWAY_WEBHOOK_TIMEOUT)
    alive = set(WorkerBeat.objects.filter(seen__gte=stale).values_list("worker", flat=True))
    recovered = 0
    with transaction.atomic():
        claimed = DBTaskResult.objects.select_for_update(skip_locked=True).filter(
            queue_name=WEBHOOK_QUEUE, status="RUNNING", started_at__lt=stale
        )[:100]
        for task in claimed:
            worker = task.worker_ids[-1] if task.worker_ids else ""
            if worker in alive and task.started_at >= abandoned:
                continue  # a long delivery on a live worker
            log.warning("webhook task %s: worker %s lost; queued again in its place", task.id, worker)
            DBTaskResult.objects.filter(id=task.id).update(status="READY", started_at=None)
            recovered += 1
    WorkerBeat.objects.filter(seen__lt=now - FORGET_BEATS).delete()
    return recovered


class Keeper(threading.Thread):
    """Renews this worker's beat and leases and recovers lost work, every third of the lease."""

    def __init__(self, worker: str):
        super().__init__(name="jobs-lease-keeper", daemon=True)
        self.worker = worker
        self.stopping = threading.Event()

    def run(self) -> None:
        period = settings.GATEWAY_JOB_LEASE_SECONDS / 3
        last_renewed = None  # time.monotonic() of this keeper's last renewal
        failed = False  # its last round could not reach the database
        recover_from = -math.inf  # a check at start: a worker started after a crash recovers at once
        while True:
            try:
                connect_database(settings.GATEWAY_CONFIG_DB_TIMEOUT)  # an outage noticed in 1 s, not the pool's 10 s
                renew(self.worker)
                now = time.monotonic()
                if failed or (last_renewed is not None and now - last_renewed > 2 * period):
                    # Cut off from the database (an outage): every lease lapsed meanwhile, the live
                    # workers' too. Recovering at once would run again a job whose worker is alive
                    # and holds its answer (jobs/outages.py): first give every live worker's keeper
                    # a lease to renew its own.
                    recover_from = now + 3 * period
                    log.info("lease keeper: the database answers again; recovering lost work in %.0f s", 3 * period)
                last_renewed, failed = now, False
                if now >= recover_from:
                    recover_lost()
                    recover_deliveries()
            except Exception as exc:
                failed = True
                log.warning("lease keeper: the database is unreachable (%s); trying again in %.1f s", exc, period)
            finally:
                close_old_connections()
            if self.stopping.wait(period):
                return
