"""Budget alerts found when calls settle (proxy/budgets.py), recorded with their calls' log rows.

`record(rows)` runs in the log writer's transaction (recording._save), beside the rollups: each
crossing that a row's detail names ("budget_alerts") becomes one BudgetAlert row, unless one
exists for that budget, threshold and period (the unique constraint: a crossing seen twice, after
a spend counter was reseeded or a spool file replayed, is recorded once). The alerts it created
go to the runtime's alert sender (the jobs app's, jobs/alerts.py), which queues their delivery in
the same transaction: an alert is recorded and queued together or not at all. The proxy never
sends anything itself. A batch without crossings costs one dictionary lookup per row.
"""

import logging
from datetime import date, timedelta
from decimal import Decimal, InvalidOperation

from django.db import IntegrityError, transaction

from routes_admin.models import BudgetAlert

from . import runtime

log = logging.getLogger("gateway.budgets")


def crossings(rows) -> list[tuple[dict, dict]]:
    """(row, crossing) for every crossing the rows' details name."""
    return [(row, item) for row in rows for item in (row.get("detail") or {}).get("budget_alerts", ())]


def alert_of(row: dict, item: dict) -> BudgetAlert:
    ended = row["created"] + timedelta(milliseconds=row.get("latency_ms") or 0)
    return BudgetAlert(
        scope=item["scope"],
        owner_id=int(item["owner_id"]),
        owner_name=str(item["owner_name"])[:100],
        budget=item["budget"],
        threshold=int(item["threshold"]),
        period_start=date.fromisoformat(item["period_start"]),
        amount=Decimal(item["amount"]),
        spent=Decimal(item["spent"]),
        request_id=row["request_id"],
        created=ended,
    )


def record(rows) -> list[int]:
    """Save the rows' new alerts and hand them to the alert sender. Call it in the transaction
    that inserts the rows. Returns the ids of the alerts it created."""
    found = crossings(rows)
    if not found:
        return []
    created = []
    for row, item in found:
        try:
            alert = alert_of(row, item)
        except (KeyError, TypeError, ValueError, InvalidOperation):  # never lose the log row for its alert
            log.exception("call %s names a budget alert that cannot be read: %r", row.get("request_id"), item)
            continue
        try:
            with transaction.atomic():
                alert.save()
        except IntegrityError:
            continue  # recorded already: one alert per budget, threshold and period
        created.append(alert.id)
    if created:
        sender = runtime.current().alert_sender
        if sender is not None:
            sender(created)
        else:
            log.warning("no alert sender in this process: %d budget alert(s) wait unsent", len(created))
    return created
