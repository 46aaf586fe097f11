"""`manage.py alert_webhook_secret`: the secret budget alert webhooks are signed with (jobs/signing.py).

A receiver of GATEWAY_BUDGET_ALERT_WEBHOOK verifies X-Gateway-Signature with it, as a job's
receiver does with its key's secret. It is derived from GATEWAY_WEBHOOK_SECRET: rotating that
changes it.
"""

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError

from jobs import signing


class Command(BaseCommand):
    help = "Print the secret that signs budget alert webhooks (derived from GATEWAY_WEBHOOK_SECRET)."

    def handle(self, *args, **options):
        try:
            self.stdout.write(signing.alert_secret())
        except ImproperlyConfigured as exc:
            raise CommandError(str(exc)) from None
