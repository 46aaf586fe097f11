"""Exports are recorded in the change history: who exported what, when, from where.

The project's change history (issue 11) is not in this branch yet; until it is, this one function
is where an export is recorded: a line on the `gateway.audit` logger. Wiring the history library
means changing this function only.
"""

import json
import logging

audit_log = logging.getLogger("gateway.audit")


def record_export(request, fmt: str, filters: dict) -> None:
    audit_log.info(
        json.dumps(
            {
                "action": "export_request_log",
                "user": request.user.get_username(),
                "format": fmt,
                "filters": filters,
                "client_ip": getattr(request, "client_ip", "") or request.META.get("REMOTE_ADDR", ""),
            },
            separators=(",", ":"),
        )
    )
