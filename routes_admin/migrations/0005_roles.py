"""The role groups Admin, Operator and Auditor with their permissions (see routes_admin/roles.py).

The lists are frozen here, as a migration must be: a later change to ROLES comes with a migration
of its own.
"""

from django.contrib.auth.management import create_permissions
from django.db import migrations

from routes_admin.roles import apply_roles

CONFIGURATION = ["route", "upstreamtarget", "quotaplan", "apikey"]
EVERY_ACTION = ["add", "change", "delete", "view"]


def perms(app_label, models, actions):
    return [f"{app_label}.{action}_{model}" for model in models for action in actions]


RECORDS_VIEW = perms("routes_admin", ["requestlog", "keyusage"], ["view"]) + ["auditlog.view_logentry"]
ROLES = {
    "Admin": perms("routes_admin", CONFIGURATION, EVERY_ACTION)
    + perms("auth", ["user", "group"], EVERY_ACTION)
    + RECORDS_VIEW,
    "Operator": perms("routes_admin", CONFIGURATION, EVERY_ACTION) + RECORDS_VIEW,
    "Auditor": perms("routes_admin", CONFIGURATION, ["view"]) + perms("auth", ["user", "group"], ["view"]) + RECORDS_VIEW,
}


def create_roles(apps, schema_editor):
    # Django creates permissions after all migrations have run; the groups need them now.
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None
    apply_roles(apps, ROLES)


def remove_roles(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name__in=ROLES).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("routes_admin", "0004_route_processing_mode"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("auditlog", "0017_add_actor_email"),
    ]

    operations = [migrations.RunPython(create_roles, remove_roles)]
