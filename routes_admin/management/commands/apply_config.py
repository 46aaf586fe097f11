"""python manage.py apply_config FILE [--yes]"""

from pathlib import Path

from django.core.management.base import CommandError

from routes_admin import config_file
from routes_admin.management.base import RecordedCommand


class Command(RecordedCommand):
    help = (
        "Show how the database differs from a configuration file (export_config's format); "
        "with --yes, make it match in one transaction. Routes and plans missing from the file are deleted."
    )

    def add_arguments(self, parser):
        parser.add_argument("file")
        parser.add_argument("--yes", action="store_true", help="Apply the changes shown.")

    def handle(self, *args, **options):
        path = Path(options["file"])
        try:
            desired = config_file.load(config_file.read(path))
            found = config_file.changes(desired)
        except OSError as exc:
            raise CommandError(f"{path}: {exc.strerror}") from None
        except config_file.ConfigError as exc:
            raise CommandError(f"{path}, {str(exc).rstrip('.')}. Nothing was changed.") from None
        if not found:
            self.stdout.write("No changes: the database matches the file.")
            self.warn(config_file.warnings(desired))
            return
        for change in found:
            self.stdout.write(str(change))
        if not options["yes"]:
            self.warn(config_file.warnings(desired))
            self.stdout.write(f"{len(found)} change(s) not applied: run again with --yes to apply them.")
            return
        try:
            warnings = config_file.apply(found)
        except Exception as exc:  # a database rule the checks missed: the transaction rolled back
            raise CommandError(f"Applying failed, nothing was changed: {exc}") from None
        self.warn(warnings)
        self.stdout.write(self.style.SUCCESS(f"Applied {len(found)} change(s)."))

    def warn(self, warnings: list[str]) -> None:
        """Configuration that is valid but cannot work as meant (routes_admin/services/routes.py)."""
        for line in warnings:
            self.stdout.write(self.style.WARNING(f"warning: {line}"))
