"""Jobs: proxied calls accepted now (202) and run later by a worker (see jobs/running.py).

A Job is its own queue entry: a queued job is due at `due` and workers claim jobs from this table
(jobs/queue.py: fairly across keys, in submission order within a key). It also is what the client
sees: who asked, the request, the state, the result, the webhook deliveries. Webhook deliveries
are django-tasks tasks (database backend), each claimed by a worker that beats (WorkerBeat).
"""

import uuid

from django.db import models
from django.db.models import Q
from django.utils import timezone

from routes_admin.models import APIKey, Route


class Status(models.TextChoices):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


FINAL = (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED)
UNFINISHED = (Status.QUEUED, Status.RUNNING)


class Job(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    api_key = models.ForeignKey(APIKey, on_delete=models.CASCADE, related_name="jobs")
    route = models.ForeignKey(Route, null=True, on_delete=models.SET_NULL, related_name="jobs")
    route_name = models.CharField(max_length=100)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    created = models.DateTimeField()
    started = models.DateTimeField(null=True, blank=True, help_text="When its last run started.")
    finished = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    # Set while running: the worker renews it; once past, the job is given to another worker (leases.py).
    lease_until = models.DateTimeField(null=True, blank=True)
    worker = models.CharField(max_length=64, blank=True, help_text="The worker running it (or that ran it last).")
    # A queued job may run from then on (later than `created` after a wait or a failed attempt).
    due = models.DateTimeField(default=timezone.now)
    idempotency_key = models.CharField(max_length=255, blank=True)
    callback_url = models.URLField(max_length=2000, blank=True)
    # The request, as the pipeline's Incoming needs it (never the client's key).
    request_id = models.CharField(max_length=128)
    method = models.CharField(max_length=10)
    path = models.CharField(max_length=2000)
    raw_path = models.CharField(max_length=2000, blank=True)
    query = models.TextField(blank=True)
    headers = models.JSONField(default=dict)
    body = models.BinaryField(default=b"")
    client_ip = models.CharField(max_length=45, blank=True)
    scheme = models.CharField(max_length=5, default="http")
    host = models.CharField(max_length=255, blank=True)
    # The result: the upstream's answer, whole (streams included), or why the job failed.
    response_status = models.PositiveSmallIntegerField(null=True, blank=True)
    response_headers = models.JSONField(default=list, blank=True)
    response_body = models.BinaryField(null=True, blank=True)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["-created"]
        constraints = [
            # Idempotency-Key: one job per key and value (submission.py clears it after its window).
            models.UniqueConstraint(
                fields=["api_key", "idempotency_key"],
                condition=~Q(idempotency_key=""),
                name="job_unique_idempotency_key",
            ),
        ]
        indexes = [
            # The route's job cap counts its running jobs; /metrics counts queued ones per route.
            models.Index(fields=["route", "status"], name="job_route_status_idx"),
            # Lost workers: running jobs whose lease ran out (a partial index stays tiny).
            models.Index(fields=["lease_until"], name="job_lease_idx", condition=Q(status="running")),
            # Retention (prune_jobs) and job latency in /metrics scan finished jobs by time.
            models.Index(fields=["finished"], name="job_finished_idx"),
            # Workers claim due queued jobs (jobs/queue.py); a partial index holds only the queue.
            models.Index(fields=["due"], name="job_queue_idx", condition=Q(status="queued")),
            # The claim orders keys by their latest start (least recently served first), and a
            # submission counts its key's unfinished jobs (max_queued_jobs).
            models.Index(fields=["api_key", "started"], name="job_key_started_idx"),
            models.Index(fields=["api_key", "status"], name="job_key_status_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.id} {self.method} {self.path} {self.status}"


class WebhookDelivery(models.Model):
    """One attempt at POSTing a finished job to its X-Callback-URL."""

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="deliveries")
    attempt = models.PositiveSmallIntegerField()
    created = models.DateTimeField()
    status = models.PositiveSmallIntegerField(null=True, blank=True, help_text="The receiver's answer.")
    error = models.CharField(max_length=500, blank=True)
    duration_ms = models.FloatField()

    class Meta:
        ordering = ["job", "attempt"]
        verbose_name_plural = "webhook deliveries"

    def __str__(self) -> str:
        return f"{self.job_id} #{self.attempt} {self.status or self.error}"

    @property
    def delivered(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


class WorkerBeat(models.Model):
    """A jobs worker's heartbeat: renewed every third of GATEWAY_JOB_LEASE_SECONDS by its keeper.

    A webhook delivery (a django-tasks task) claimed by a worker whose beat is older than the lease
    goes back to the queue where it was (jobs/leases.py): the engine alone would leave it RUNNING.
    """

    worker = models.CharField(max_length=64, primary_key=True)
    seen = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.worker} {self.seen:%Y-%m-%d %H:%M:%S}"
