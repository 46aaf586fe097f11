"""python manage.py create_token USERNAME [--name NAME]"""

from django.contrib.auth import get_user_model
from django.core.management.base import CommandError

from routes_admin.management.base import RecordedCommand
from routes_admin.models import ManagementToken


class Command(RecordedCommand):
    help = (
        "Create a management API token for a user; it acts with that user's role. "
        "The token is printed once, alone on the last line; only its hash is stored."
    )

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--name", default="command line", help="What the token is for.")

    def handle(self, *args, **options):
        user = get_user_model().objects.filter(username=options["username"]).first()
        if user is None:
            raise CommandError(f"No user named {options['username']!r}.")
        if not user.is_active:
            raise CommandError(f"{user.username} is not active: a token of theirs would be refused.")
        token, secret = ManagementToken.objects.issue(user, options["name"])
        self.stdout.write(f"Created token {token} for {user.username}.")
        self.stdout.write("Store it now: it is shown only this once.")
        self.stdout.write(secret)
