"""Quota plans: create, change and delete them."""

from django.db import transaction

from ..models import QuotaPlan
from .errors import checked

PLAN_FIELDS = ("name", *QuotaPlan.LIMIT_FIELDS)


def check_plan(plan: QuotaPlan | None, fields: dict) -> QuotaPlan:
    """The plan as it will be saved: `plan` (or a new one) with `fields` applied, checked."""
    plan = plan if plan is not None else QuotaPlan()
    for name, value in fields.items():
        setattr(plan, name, value)
    checked(plan)
    return plan


@transaction.atomic
def save_plan(plan: QuotaPlan | None, fields: dict) -> QuotaPlan:
    """Create (plan=None) or change a quota plan."""
    plan = check_plan(plan, fields)
    plan.save()
    return plan


@transaction.atomic
def delete_plan(plan: QuotaPlan) -> None:
    """Delete a plan; its keys and routes keep running without it."""
    plan.delete()
