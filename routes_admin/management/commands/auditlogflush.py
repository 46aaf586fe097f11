"""python manage.py auditlogflush: refused, whatever its options.

django-auditlog's command deletes (or TRUNCATEs) the change history, which is append-only here
(routes_admin/history.py). This app is listed before auditlog in INSTALLED_APPS, so this command
replaces auditlog's.
"""

from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = "Refused: the change history is append-only; nothing deletes or truncates its entries."

    def add_arguments(self, parser):
        # auditlog's options, accepted so that every form of the command gets the same refusal.
        parser.add_argument("-y", "--yes", action="store_true")
        parser.add_argument("-b", "--before-date")
        parser.add_argument("-t", "--truncate", action="store_true")

    def handle(self, *args, **options):
        raise CommandError(
            "The change history is append-only: auditlogflush is disabled in this gateway and nothing was "
            "deleted. To keep the database small, archive it with a database dump; entries are never removed."
        )
