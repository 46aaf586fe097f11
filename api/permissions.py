"""Roles are Django groups holding model permissions; these classes ask for them.

Admin, Operator and Auditor (issue 11) are groups: an auditor holds the `view` permissions only,
so every change it attempts here is a 403.
"""

from rest_framework.permissions import DjangoModelPermissions

VIEW = "%(app_label)s.view_%(model_name)s"
CHANGE = "%(app_label)s.change_%(model_name)s"


class ModelPermissions(DjangoModelPermissions):
    """DRF's model permissions (add, change, delete), and reading needs `view` (DRF lets anyone read)."""

    perms_map = {**DjangoModelPermissions.perms_map, "GET": [VIEW], "HEAD": [VIEW]}


class ChangePermission(DjangoModelPermissions):
    """For actions that change an object whatever their method: rotating or revoking a key."""

    perms_map = {method: [CHANGE] for method in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")} | {"OPTIONS": []}
