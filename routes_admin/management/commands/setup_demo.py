"""Create, once, what the quickstart needs: an admin user, a demo route and a demo key.

Running it again changes nothing and prints where the saved credentials are.
"""

import os
import secrets
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model

from routes_admin.management.base import RecordedCommand
from routes_admin.models import APIKey, Route, UpstreamTarget
from routes_admin.services import keys as key_service
from routes_admin.services import routes as route_service

CREDENTIALS = Path(settings.BASE_DIR) / ".run" / "demo-credentials"


def demo_upstream_url() -> str:
    """Where `make run` starts the demo component (DEMO_PORT), unless DEMO_UPSTREAM_URL says otherwise."""
    return os.environ.get("DEMO_UPSTREAM_URL") or f"http://127.0.0.1:{os.environ.get('DEMO_PORT', '9000')}/v1"


def gateway_url() -> str:
    return "http://" + os.environ.get("GATEWAY_BIND", "127.0.0.1:8000")


class Command(RecordedCommand):
    help = "Create the quickstart's admin user, demo route and demo key (once)."

    def add_arguments(self, parser):
        parser.add_argument("--upstream", default=demo_upstream_url())

    def handle(self, *args, **options):
        CREDENTIALS.parent.mkdir(exist_ok=True)
        saved = (
            dict(line.split("=", 1) for line in CREDENTIALS.read_text().splitlines() if "=" in line)
            if CREDENTIALS.exists()
            else {}
        )

        User = get_user_model()
        if not User.objects.filter(username="admin").exists():
            saved["ADMIN_PASSWORD"] = secrets.token_urlsafe(12)
            User.objects.create_superuser("admin", "admin@example.com", saved["ADMIN_PASSWORD"])

        route = Route.objects.filter(name="demo").first()
        target = UpstreamTarget.objects.filter(route=route, name="demo-component").first() if route else None
        if route is None:
            fields = {"name": "demo", "path_prefix": "/v1", "methods": "GET,POST", "retry_non_idempotent": True}
            targets = [{"name": "demo-component", "url": options["upstream"]}]
            route = route_service.save_route(None, fields, targets).route
        elif target is not None and target.url != options["upstream"]:
            # The demo component moved (another DEMO_PORT): follow it rather than answer 502.
            target = route_service.save_target(route, target, {"url": options["upstream"]})
            self.stdout.write(f"Demo route now points at {target.url}")

        if not APIKey.objects.filter(name="demo").exists() or "DEMO_KEY" not in saved:
            for old in APIKey.objects.filter(name="demo"):
                key_service.delete_key(old)
            key, saved["DEMO_KEY"] = key_service.issue_key({"name": "demo", "owner": "quickstart"}, [route])

        CREDENTIALS.write_text("".join(f"{k}={v}\n" for k, v in saved.items()))
        CREDENTIALS.chmod(0o600)
        self.stdout.write(
            f"Admin:    {gateway_url()}/admin/  user admin  password {saved.get('ADMIN_PASSWORD', '(set earlier; see ' + str(CREDENTIALS) + ')')}"
        )
        self.stdout.write(f"Demo key: {saved['DEMO_KEY']}")
        self.stdout.write(f"(saved in {CREDENTIALS.relative_to(settings.BASE_DIR)}, which git ignores)")
