"""manage.py import_prices FILE [--yes]: load a CSV or JSON price sheet into the price list.

Shows what would change (new prices, changed ones, unchanged ones) and applies it only with
--yes, in one transaction. Importing the same sheet again changes nothing. A sheet with one bad
line applies nothing and names every bad line.
"""

from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.management.base import CommandError

from routes_admin.management.base import RecordedCommand
from routes_admin.services import ServiceError, spend


class Command(RecordedCommand):
    help = "Load a CSV or JSON price sheet (columns: " + ", ".join(spend.PRICE_COLUMNS) + ", optional currency)."

    def add_arguments(self, parser):
        parser.add_argument("file", help="A .csv or .json file; - reads standard input.")
        parser.add_argument("--yes", action="store_true", help="Apply the changes shown (otherwise only show them).")

    def handle(self, *args, file, yes, **options):
        try:
            text = self.stdin.read() if file == "-" else Path(file).read_text(encoding="utf-8")
        except OSError as exc:
            raise CommandError(f"Cannot read {file}: {exc.strerror}.") from None
        try:
            entries = spend.check_price_sheet(spend.read_price_sheet(text, file))
            plan = spend.plan_prices(entries)
        except ValidationError as exc:
            raise CommandError("The sheet was not applied:\n  " + "\n  ".join(exc.messages)) from None
        currency = settings.GATEWAY_CURRENCY
        changes = 0
        for action, entry, existing in plan:
            if action == "same":
                self.stdout.write(f"  = {entry.describe()} (unchanged)")
                continue
            changes += 1
            if existing is not None:
                was = f"{existing.input_per_million} in / {existing.output_per_million} out"
                self.stdout.write(f"  ~ {entry.describe()} {currency} (was {was})")
            else:
                self.stdout.write(f"  + {entry.describe()} {currency}")
        if not changes:
            self.stdout.write("Nothing to change.")
            return
        if not yes:
            self.stdout.write(f"{changes} change(s) not applied: run again with --yes to apply them.")
            return
        try:
            applied = spend.apply_prices(plan)
        except ServiceError as exc:
            raise CommandError("The sheet was not applied:\n  " + "\n  ".join(exc.messages())) from None
        self.stdout.write(self.style.SUCCESS(f"Applied {applied} change(s)."))
