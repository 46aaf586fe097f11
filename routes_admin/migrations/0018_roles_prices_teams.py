"""Prices and teams are configuration: operators manage them, auditors read them (the API's /prices/ and /teams/).

The lists are frozen here, as a migration must be (see 0005_roles and routes_admin/roles.py).
"""

from django.contrib.auth.management import create_permissions
from django.db import migrations

from routes_admin.roles import apply_roles

CONFIGURATION = ["route", "upstreamtarget", "quotaplan", "apikey", "modelprice", "team"]
EVERY_ACTION = ["add", "change", "delete", "view"]


def perms(app_label, models, actions):
    return [f"{app_label}.{action}_{model}" for model in models for action in actions]


RECORDS_VIEW = (
    perms("routes_admin", ["requestlog", "keyusage", "usagerollup"], ["view"])
    + ["auditlog.view_logentry"]
    + perms("jobs", ["job", "webhookdelivery"], ["view"])
)
ROLES = {
    "Admin": perms("routes_admin", CONFIGURATION, EVERY_ACTION)
    + perms("auth", ["user", "group"], EVERY_ACTION)
    + RECORDS_VIEW,
    "Operator": perms("routes_admin", CONFIGURATION, EVERY_ACTION) + RECORDS_VIEW,
    "Auditor": perms("routes_admin", CONFIGURATION, ["view"]) + perms("auth", ["user", "group"], ["view"]) + RECORDS_VIEW,
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
        ("routes_admin", "0017_requestlog_budget_exceeded"),
        ("jobs", "0001_initial"),
    ]

    operations = [migrations.RunPython(update_roles, migrations.RunPython.noop)]
