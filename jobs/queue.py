"""Which job a free worker takes next: chosen, locked and marked running in ONE transaction.

Fair across keys: among the queued jobs that are due and whose route is under its job cap, a
worker takes the oldest job of the key served least recently (the key whose latest job start is
the oldest, or that never had one). Keys therefore take turns, one job each, whatever their
backlogs: a job that becomes due waits for at most one job start of each other key with work
due before it starts itself (README, "Fair turns"). Within a key jobs run in submission order,
and a job put back in the queue (a wait, a failed attempt, a lost worker) keeps its place: only
its `due` moves, never its `created`.

Several workers: on PostgreSQL the chosen row is locked with SKIP LOCKED, so each worker takes
a different job; SQLite's write transactions run one at a time. A job is never "claimed" without
being running: the choice and the change to running commit together, and a running job holds a
lease (jobs/leases.py), so a worker that dies at any point leaves nothing behind for good.
"""

from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Count, F, OuterRef, Q, Subquery
from django.utils import timezone

from routes_admin.models import Route

from .models import Job, Status


def claim_next(worker: str, now: datetime | None = None) -> Job | None:
    """The next job, now running on `worker`; None when no job is due (or a route's cap was
    reached meanwhile by another worker: it is looked at again on the next turn)."""
    now = now or timezone.now()
    with transaction.atomic():
        job = next_job(now).first()
        if job is None:
            return None
        if job.route_id is not None and not route_has_room(job.route_id):
            return None
        job.status, job.started, job.worker = Status.RUNNING, now, worker
        job.attempts += 1
        job.lease_until = now + timedelta(seconds=settings.GATEWAY_JOB_LEASE_SECONDS)
        job.save(update_fields=["status", "started", "worker", "attempts", "lease_until"])
    return job


def next_job(now: datetime):
    """Due queued jobs, the fair choice first (see the module docstring), locked as they are read."""
    last_start = (
        Job.objects.filter(api_key_id=OuterRef("api_key_id"), started__isnull=False)
        .order_by("-started")
        .values("started")[:1]
    )
    full_routes = (
        Route.objects.filter(max_concurrent_jobs__isnull=False)
        .annotate(running=Count("jobs", filter=Q(jobs__status=Status.RUNNING)))
        .filter(running__gte=F("max_concurrent_jobs"))
        .values("id")
    )
    return (
        Job.objects.filter(status=Status.QUEUED, due__lte=now)
        .exclude(route_id__in=full_routes)
        .annotate(served=Subquery(last_start))
        .order_by(F("served").asc(nulls_first=True), "created", "id")
        .select_for_update(skip_locked=True, of=("self",))
    )


def route_has_room(route_id: int) -> bool:
    """Whether the route may start one more job. Locking the route's row makes claims on one
    route take turns (PostgreSQL), so two workers never both take its last place."""
    cap = Route.objects.select_for_update().filter(id=route_id).values_list("max_concurrent_jobs", flat=True).first()
    return cap is None or Job.objects.filter(route_id=route_id, status=Status.RUNNING).count() < cap
