"""manage.py prune_logs --older-than DAYS: retention for the request log, in batches.

Deletes by primary key in batches of --batch-size rows, each in its own short transaction, so a
big backlog never holds a long lock or a huge transaction and the gateway keeps writing
meanwhile. The scan uses the `log_created_idx` index on RequestLog.created.
"""

import time
from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.utils import timezone

from routes_admin.models import RequestLog


def prune(cutoff, batch_size: int = 5000, pause: float = 0.0) -> int:
    """Delete every RequestLog row created before `cutoff`; returns how many."""
    deleted = 0
    while True:
        ids = list(RequestLog.objects.filter(created__lt=cutoff).order_by().values_list("pk", flat=True)[:batch_size])
        if not ids:
            return deleted
        with transaction.atomic():
            count, _ = RequestLog.objects.filter(pk__in=ids).delete()
        deleted += count
        if pause:
            time.sleep(pause)  # leave room for the gateway's own writes on a busy database


class Command(BaseCommand):
    help = "Delete request log rows older than DAYS days, in batches (run it daily, e.g. from cron)."

    def add_arguments(self, parser):
        parser.add_argument(
            "--older-than",
            type=float,
            required=True,
            metavar="DAYS",
            help="Keep this many days of log; older rows are deleted.",
        )
        parser.add_argument("--batch-size", type=int, default=5000, help="Rows deleted per transaction (default 5000).")
        parser.add_argument("--pause", type=float, default=0.0, help="Seconds to sleep between batches (default 0).")
        parser.add_argument("--dry-run", action="store_true", help="Only count the rows that would be deleted.")

    def handle(self, *args, older_than: float, batch_size: int, pause: float, dry_run: bool, **options):
        if older_than < 0:
            raise CommandError("--older-than must be 0 or more days.")
        if batch_size < 1:
            raise CommandError("--batch-size must be at least 1.")
        cutoff = timezone.now() - timedelta(days=older_than)
        if dry_run:
            count = RequestLog.objects.filter(created__lt=cutoff).count()
            self.stdout.write(f"{count} request log row(s) older than {cutoff:%Y-%m-%d %H:%M:%S %Z} would be deleted.")
            return
        deleted = prune(cutoff, batch_size, pause)
        self.stdout.write(f"Deleted {deleted} request log row(s) older than {cutoff:%Y-%m-%d %H:%M:%S %Z}.")
