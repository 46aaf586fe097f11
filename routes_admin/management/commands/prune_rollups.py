"""manage.py prune_rollups: retention for the dashboard's per-minute and per-hour rollups.

Log rows and rollups have separate retentions: prune_logs never touches the rollups, so the
dashboard's history outlives the rows. Minute rollups go after GATEWAY_ROLLUP_MINUTE_DAYS, hour
rollups after GATEWAY_ROLLUP_HOUR_DAYS; day rollups are kept unless --days-days is given. The
deletes use the leading (period, start) columns of the rollup_unique_group index.
"""

from datetime import timedelta

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from routes_admin.models import UsageRollup


class Command(BaseCommand):
    help = "Delete old per-minute and per-hour usage rollups (day rollups are kept unless told)."

    def add_arguments(self, parser):
        parser.add_argument("--minutes-days", type=float, default=settings.GATEWAY_ROLLUP_MINUTE_DAYS, metavar="DAYS")
        parser.add_argument("--hours-days", type=float, default=settings.GATEWAY_ROLLUP_HOUR_DAYS, metavar="DAYS")
        parser.add_argument("--days-days", type=float, default=None, metavar="DAYS", help="Default: keep them all.")

    def handle(self, *args, minutes_days: float, hours_days: float, days_days: float | None, **options):
        now = timezone.now()
        keep = {"minute": minutes_days, "hour": hours_days, "day": days_days}
        for period, days in keep.items():
            if days is None:
                continue
            if days < 0:
                raise CommandError("Retentions must be 0 or more days.")
            cutoff = now - timedelta(days=days)
            deleted, _ = UsageRollup.objects.filter(period=period, start__lt=cutoff).delete()
            self.stdout.write(f"Deleted {deleted} {period} rollup(s) older than {cutoff:%Y-%m-%d %H:%M %Z}.")
