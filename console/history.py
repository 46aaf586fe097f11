"""Exports are recorded in the change history (django-auditlog, routes_admin/history.py): who
exported which calls, when and from where, as an "access" entry on the request log."""

from auditlog.models import LogEntry
from django.contrib.contenttypes.models import ContentType

from routes_admin.models import RequestLog


def record_export(request, fmt: str, filters: dict) -> LogEntry:
    user = request.user
    described = ", ".join(f"{name}={value}" for name, value in filters.items()) or "all calls"
    return LogEntry.objects.create(
        content_type=ContentType.objects.get_for_model(RequestLog),
        object_pk="export",
        object_repr=f"request log export ({fmt}): {described}"[:500],
        action=LogEntry.Action.ACCESS,
        changes={},
        actor=user,
        remote_addr=getattr(request, "client_ip", "") or request.META.get("REMOTE_ADDR") or None,
        additional_data={"actor": user.get_username()},  # the history middleware's own, when it runs
        serialized_data={"export": {"format": fmt, "filters": filters}},
    )
