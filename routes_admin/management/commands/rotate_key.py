"""python manage.py rotate_key PREFIX [--grace-seconds N]"""

from datetime import timedelta

from django.core.management.base import CommandError
from django.utils import timezone

from routes_admin import keys
from routes_admin.management.base import RecordedCommand
from routes_admin.models import APIKey
from routes_admin.services import ServiceError
from routes_admin.services import keys as key_service


class Command(RecordedCommand):
    help = (
        "Give a key a new secret (same limits, routes and usage). The old secret keeps working for "
        "--grace-seconds (default 0: refused at once). The new secret is printed once, alone on the last line."
    )

    def add_arguments(self, parser):
        parser.add_argument("prefix", help="The key's prefix: the 8 characters after gw_ (gw_ab12cd34_… or ab12cd34).")
        parser.add_argument("--grace-seconds", type=int, default=0)

    def handle(self, *args, **options):
        prefix = options["prefix"].removeprefix(keys.KEY_START).split("_")[0]
        key = APIKey.objects.filter(prefix=prefix).first()
        if key is None:
            raise CommandError(f"No key with the prefix {prefix!r}.")
        try:
            secret = key_service.rotate_key(key, timedelta(seconds=options["grace_seconds"]))
        except (ServiceError, OverflowError):
            most = int(key_service.MAX_GRACE.total_seconds())
            raise CommandError(
                f"--grace-seconds is between 0 and {most} ({key_service.MAX_GRACE.days} days)."
            ) from None
        if options["grace_seconds"]:
            until = timezone.localtime(key.previous_expires)
            self.stdout.write(f"Rotated {key}. The old secret works until {until:%Y-%m-%d %H:%M:%S %Z}.")
        else:
            self.stdout.write(f"Rotated {key}. The old secret is refused from now on.")
        self.stdout.write("Store the new secret now: it is shown only this once.")
        self.stdout.write(secret)
