"""The one write path for the configuration: routes with their targets, keys and quota plans.

Every surface that changes configuration (the admin, the management API, the configuration
file, the management commands) calls these functions and nothing else to do it; none of them
checks a rule or saves one of these models itself. A module per area, and in it:

- a function per change, named for it (`save_route`, `issue_key`, `revoke_key`, `delete_plan`),
  taking plain values, the existing object (or None for a new one) and the fields given;
- the rules of that area (defaults, what is kept when a field is left out, what must go
  together) and its checks (the models' own `full_clean()`), before anything is written;
- one exception for every refusal, `ServiceError`, carrying field messages: each surface turns it
  into its own form (admin form errors, the API's 400 JSON, a configuration file's line error);
- writes inside one transaction, each object saved with its model's `save()` / `delete()`, so
  the change history (django-auditlog) records it and `proxy/signals.py` announces it to every
  gateway process after the commit.

A surface that validates before it saves (an admin form) calls the area's `check_*` function
in its `clean()` and the write function when it saves; the write checks again, so a write is
never made unchecked. New areas (prices, teams, budgets) add a module here in the same shape.
"""

from .errors import ServiceError

__all__ = ["ServiceError"]
