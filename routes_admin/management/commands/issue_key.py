"""python manage.py issue_key --name NAME (--route ROUTE ... | --all-routes) [--expires-days N]"""

from datetime import timedelta

from django.core.management.base import CommandError
from django.utils import timezone

from routes_admin.management.base import RecordedCommand
from routes_admin.models import QuotaPlan, Route
from routes_admin.services import ServiceError
from routes_admin.services import keys as key_service


class Command(RecordedCommand):
    help = "Issue an API key. The key is printed once, alone on the last line; only its hash is stored."

    def add_arguments(self, parser):
        parser.add_argument("--name", required=True)
        parser.add_argument("--owner", default="")
        reach = parser.add_mutually_exclusive_group()
        reach.add_argument("--route", action="append", default=[], metavar="ROUTE_NAME", help="May be repeated.")
        reach.add_argument("--all-routes", action="store_true")
        parser.add_argument("--expires-days", type=int)
        parser.add_argument("--plan", help="Name of a quota plan.")

    def handle(self, *args, **options):
        routes = list(Route.objects.filter(name__in=options["route"]))
        missing = set(options["route"]) - {route.name for route in routes}
        if missing:
            raise CommandError(f"No route named: {', '.join(sorted(missing))}")
        plan = None
        if options["plan"]:
            plan = QuotaPlan.objects.filter(name=options["plan"]).first()
            if plan is None:
                raise CommandError(f"No quota plan named {options['plan']!r}")
        expires = None
        if options["expires_days"] is not None:
            expires = timezone.now() + timedelta(days=options["expires_days"])
        fields = {"name": options["name"], "owner": options["owner"], "all_routes": options["all_routes"]}
        try:
            key, secret = key_service.issue_key({**fields, "expires": expires, "quota_plan": plan}, routes)
        except ServiceError as exc:
            if "routes" in exc.errors:  # the service's rule, in this command's words
                raise CommandError(
                    "Say which routes the key may call: --route NAME (repeatable) or --all-routes."
                ) from None
            if "expires" in exc.errors:
                raise CommandError("--expires-days must be a positive number of days.") from None
            raise CommandError(" ".join(exc.messages())) from None
        reach = "every route" if key.all_routes else ", ".join(route.name for route in routes)
        self.stdout.write(f"Issued key {key.display_prefix} ({key.name}) for {reach}.")
        if expires:
            self.stdout.write(f"It expires on {expires:%Y-%m-%d %H:%M} UTC.")
        self.stdout.write("Store it now: it is shown only this once.")
        self.stdout.write(secret)
