"""Delete finished jobs (requests, results, webhook deliveries) older than the retention time."""

from datetime import timedelta

from django.conf import settings
from django.core.management.base import BaseCommand
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from jobs.models import FINAL, Job


class Command(BaseCommand):
    help = "Delete finished jobs older than GATEWAY_JOB_RETENTION_DAYS (or --days), and the queue's finished entries."

    def add_arguments(self, parser):
        parser.add_argument("--days", type=float, default=None, help="Override GATEWAY_JOB_RETENTION_DAYS.")

    def handle(self, *args, days=None, **options):
        days = settings.GATEWAY_JOB_RETENTION_DAYS if days is None else days
        cutoff = timezone.now() - timedelta(days=days)
        _, per_model = Job.objects.filter(status__in=FINAL, finished__lt=cutoff).delete()
        deleted = per_model.get("jobs.Job", 0)
        # The queue's own bookkeeping of tasks that ended (each job has one or more).
        tasks, _ = DBTaskResult.objects.finished().filter(finished_at__lt=cutoff).delete()
        self.stdout.write(
            f"Deleted {deleted} job(s) finished before {cutoff:%Y-%m-%d %H:%M} and {tasks} queue entries."
        )
