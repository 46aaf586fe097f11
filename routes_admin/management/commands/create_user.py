"""manage.py create_user USERNAME --role {Admin,Operator,Auditor} [--email E] [--password-from-env VAR | --no-password]"""

import getpass
import os
import sys

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.management.base import CommandError
from django.db import transaction

from routes_admin.management.base import RecordedCommand
from routes_admin.roles import ROLES


class Command(RecordedCommand):
    help = (
        "Create a user who signs in to the admin with a role: Admin, Operator or Auditor. "
        "Without --password-from-env or --no-password the password is asked for."
    )

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--role", required=True, choices=list(ROLES))
        parser.add_argument("--email", default="")
        password = parser.add_mutually_exclusive_group()
        password.add_argument(
            "--password-from-env", metavar="VAR", help="Read the password from this environment variable."
        )
        password.add_argument(
            "--no-password", action="store_true", help="No usable password (set one later, or sign in otherwise)."
        )

    def handle(self, *args, **options):
        User = get_user_model()
        username = options["username"]
        if User.objects.filter(username=username).exists():
            raise CommandError(f"A user named {username!r} exists already.")
        group = Group.objects.filter(name=options["role"]).first()
        if group is None:
            raise CommandError(f"The role group {options['role']!r} is missing: run `manage.py migrate`.")

        user = User(username=username, email=options["email"], is_staff=True)  # staff: may open the admin
        if options["no_password"]:
            user.set_unusable_password()
        else:
            password = self.password(options["password_from_env"])
            try:
                validate_password(password, user)
            except ValidationError as error:
                raise CommandError(" ".join(error.messages)) from None
            user.set_password(password)

        with transaction.atomic():
            user.save()
            user.groups.add(group)
        self.stdout.write(f"Created {options['role']} {username!r}.")

    def password(self, variable: str | None) -> str:
        if variable:
            value = os.environ.get(variable)
            if not value:
                raise CommandError(f"The environment variable {variable} is empty or not set.")
            return value
        if not sys.stdin.isatty():
            raise CommandError("No terminal to ask for the password: use --password-from-env VAR or --no-password.")
        first = getpass.getpass("Password: ")
        if first != getpass.getpass("Password (again): "):
            raise CommandError("The two passwords differ.")
        return first
