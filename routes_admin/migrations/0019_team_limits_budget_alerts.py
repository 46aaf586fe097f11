"""Teams get call limits of their own (counted once for all their keys), keys, teams and routes
alert thresholds, and crossed thresholds are recorded as budget alerts, which every role may read.

The role lists are frozen here, as a migration must be (see 0005_roles and routes_admin/roles.py).
"""

import django.utils.timezone
import routes_admin.pricing
from django.contrib.auth.management import create_permissions
from django.db import migrations, models

from routes_admin.roles import apply_roles


CONFIGURATION = ["route", "upstreamtarget", "quotaplan", "apikey", "modelprice", "team"]
EVERY_ACTION = ["add", "change", "delete", "view"]


def perms(app_label, models, actions):
    return [f"{app_label}.{action}_{model}" for model in models for action in actions]


RECORDS_VIEW = (
    perms("routes_admin", ["requestlog", "keyusage", "usagerollup", "budgetalert"], ["view"])
    + ["auditlog.view_logentry"]
    + perms("jobs", ["job", "webhookdelivery"], ["view"])
)
ROLES = {
    "Admin": perms("routes_admin", CONFIGURATION, EVERY_ACTION)
    + perms("auth", ["user", "group"], EVERY_ACTION)
    + RECORDS_VIEW,
    "Operator": perms("routes_admin", CONFIGURATION, EVERY_ACTION) + RECORDS_VIEW,
    "Auditor": perms("routes_admin", CONFIGURATION, ["view"])
    + perms("auth", ["user", "group"], ["view"])
    + RECORDS_VIEW,
}


def update_roles(apps, schema_editor):
    # Django creates permissions after all migrations have run; the groups need them now.
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None
    apply_roles(apps, ROLES)


class Migration(migrations.Migration):
    dependencies = [
        ("routes_admin", "0018_roles_prices_teams"),
    ]

    operations = [
        migrations.AddField(
            model_name="apikey",
            name="alert_thresholds",
            field=models.CharField(
                blank=True,
                help_text="Percentages of each budget that send an alert, e.g. 50,80,100. Empty: the gateway's default (GATEWAY_BUDGET_ALERT_THRESHOLDS); none: no alerts.",
                max_length=100,
                validators=[routes_admin.pricing.check_alert_thresholds],
            ),
        ),
        migrations.AddField(
            model_name="route",
            name="alert_thresholds",
            field=models.CharField(
                blank=True,
                help_text="Percentages of each budget that send an alert, e.g. 50,80,100. Empty: the gateway's default (GATEWAY_BUDGET_ALERT_THRESHOLDS); none: no alerts.",
                max_length=100,
                validators=[routes_admin.pricing.check_alert_thresholds],
            ),
        ),
        migrations.AddField(
            model_name="team",
            name="alert_thresholds",
            field=models.CharField(
                blank=True,
                help_text="Percentages of each budget that send an alert, e.g. 50,80,100. Empty: the gateway's default (GATEWAY_BUDGET_ALERT_THRESHOLDS); none: no alerts.",
                max_length=100,
                validators=[routes_admin.pricing.check_alert_thresholds],
            ),
        ),
        migrations.AddField(
            model_name="team",
            name="max_concurrent",
            field=models.PositiveIntegerField(blank=True, help_text="Requests in flight at once.", null=True),
        ),
        migrations.AddField(
            model_name="team",
            name="requests_per_day",
            field=models.PositiveIntegerField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="team",
            name="requests_per_hour",
            field=models.PositiveIntegerField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="team",
            name="requests_per_minute",
            field=models.PositiveIntegerField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="team",
            name="tokens_per_day",
            field=models.PositiveBigIntegerField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="team",
            name="tokens_per_month",
            field=models.PositiveBigIntegerField(blank=True, null=True),
        ),
        migrations.CreateModel(
            name="BudgetAlert",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                (
                    "scope",
                    models.CharField(choices=[("key", "Key"), ("team", "Team"), ("route", "Route")], max_length=5),
                ),
                ("owner_id", models.PositiveBigIntegerField(help_text="The key's, team's or route's id.")),
                ("owner_name", models.CharField(max_length=100)),
                ("budget", models.CharField(help_text="budget_per_day or budget_per_month.", max_length=20)),
                ("threshold", models.PositiveSmallIntegerField(help_text="Percent of the budget.")),
                ("period_start", models.DateField(help_text="The day, or the month's first day, in TIME_ZONE.")),
                ("amount", models.DecimalField(decimal_places=6, help_text="The budget.", max_digits=18)),
                (
                    "spent",
                    models.DecimalField(
                        decimal_places=12, help_text="The period's spend when it crossed.", max_digits=24
                    ),
                ),
                (
                    "request_id",
                    models.CharField(blank=True, help_text="The call whose cost crossed it.", max_length=128),
                ),
                ("created", models.DateTimeField(default=django.utils.timezone.now)),
                (
                    "state",
                    models.CharField(
                        choices=[
                            ("pending", "waiting to be sent"),
                            ("sent", "sent"),
                            ("failed", "not sent: gave up"),
                            ("unsent", "recorded only: no destination set"),
                        ],
                        default="pending",
                        max_length=7,
                    ),
                ),
                ("attempts", models.PositiveSmallIntegerField(default=0)),
                (
                    "webhook_status",
                    models.PositiveSmallIntegerField(blank=True, help_text="The receiver's last answer.", null=True),
                ),
                ("webhook_sent", models.DateTimeField(blank=True, null=True)),
                ("email_sent", models.DateTimeField(blank=True, null=True)),
                ("error", models.CharField(blank=True, help_text="Why the last attempt failed.", max_length=500)),
            ],
            options={
                "ordering": ["-created", "-id"],
                "indexes": [
                    models.Index(fields=["created"], name="alert_created_idx"),
                    models.Index(fields=["scope", "owner_id", "created"], name="alert_owner_idx"),
                ],
                "constraints": [
                    models.UniqueConstraint(
                        fields=("scope", "owner_id", "budget", "threshold", "period_start"),
                        name="alert_once_per_period",
                    )
                ],
            },
        ),
        migrations.RunPython(update_roles, migrations.RunPython.noop),
    ]
