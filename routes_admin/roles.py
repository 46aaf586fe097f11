"""The three roles people have here, as Django groups with permissions.

- Admin: everything, people included.
- Operator: routes, targets, quota plans, keys, prices and teams; reads the logs, usage and change history; not people.
- Auditor: reads everything, changes nothing.

The admin, the management API and the console all decide through Django's permissions, which
come from these groups (a superuser has every permission). Nobody, whatever the role, may add,
change or delete change-history entries: no role grants those permissions.

The groups are created by migration 0005_roles and brought up to date by 0010_roles_records. When
ROLES changes, add a migration that applies the new lists (tests/admin/test_roles.py fails while the database and ROLES disagree).
"""

ADMIN = "Admin"
OPERATOR = "Operator"
AUDITOR = "Auditor"

# What the gateway serves from: operators manage these.
CONFIGURATION = [
    "routes_admin.route",
    "routes_admin.upstreamtarget",
    "routes_admin.quotaplan",
    "routes_admin.apikey",
    "routes_admin.modelprice",
    "routes_admin.team",
]
# People and their roles: admins only.
PEOPLE = ["auth.user", "auth.group"]
# What happened: read by every role, written only by the gateway itself.
RECORDS = [
    "routes_admin.requestlog",
    "routes_admin.keyusage",
    "routes_admin.usagerollup",
    "routes_admin.budgetalert",
    "auditlog.logentry",
    "jobs.job",
    "jobs.webhookdelivery",
]

EVERY_ACTION = ["add", "change", "delete", "view"]


def permissions(models: list[str], actions: list[str]) -> list[str]:
    """'app_label.action_model' for each model and action."""
    return [f"{model.split('.')[0]}.{action}_{model.split('.')[1]}" for model in models for action in actions]


ROLES: dict[str, list[str]] = {
    ADMIN: permissions(CONFIGURATION + PEOPLE, EVERY_ACTION) + permissions(RECORDS, ["view"]),
    OPERATOR: permissions(CONFIGURATION, EVERY_ACTION) + permissions(RECORDS, ["view"]),
    AUDITOR: permissions(CONFIGURATION + PEOPLE + RECORDS, ["view"]),
}

# Strongest first: a user in several role groups has the strongest one.
RANKED = [ADMIN, OPERATOR, AUDITOR]


def user_role(user) -> str | None:
    """The user's role name (a superuser is an Admin), or None for no role."""
    if user is None or not user.is_authenticated or not user.is_active:
        return None
    if user.is_superuser:
        return ADMIN
    names = set(user.groups.values_list("name", flat=True))
    return next((role for role in RANKED if role in names), None)


def has_role(user, name: str) -> bool:
    return user_role(user) == name


def is_auditor(user) -> bool:
    """Read-only: an auditor sees everything and changes nothing."""
    return has_role(user, AUDITOR)


def can_change(user, model) -> bool:
    """May the user change rows of this model (a model class or 'app_label.model')?"""
    if isinstance(model, str):
        app_label, name = model.split(".")
    else:
        app_label, name = model._meta.app_label, model._meta.model_name
    return user.is_active and user.has_perm(f"{app_label}.change_{name}")


def apply_roles(apps, roles: dict[str, list[str]]) -> None:
    """Create the role groups and give each exactly its permissions (for data migrations)."""
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for name, wanted in roles.items():
        group, _ = Group.objects.get_or_create(name=name)
        found = []
        for dotted in wanted:
            app_label, codename = dotted.split(".")
            found.append(Permission.objects.get(content_type__app_label=app_label, codename=codename))
        group.permissions.set(found)
