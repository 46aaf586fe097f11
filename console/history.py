"""Exports are recorded in the change history (django-auditlog, routes_admin/history.py): who
exported which calls, when and from where, as an "access" entry on the request log.

The filters are recorded with the time zone they were read in (the console's, console/zones.py):
a time typed without an offset is written with it, so the entry names the same calls wherever it
is read."""

from auditlog.models import LogEntry
from django.contrib.contenttypes.models import ContentType
from django.utils import timezone

from routes_admin.models import RequestLog

from . import filters

TIME_FILTERS = ("created_after", "created_before")


def recorded_filters(filterset) -> dict:
    """The filters in use as typed, their times as ISO 8601 with the offset they were read with."""
    given = filters.active(filterset)
    for name in TIME_FILTERS:
        if name in given and filterset.form.cleaned_data.get(name):
            given[name] = timezone.localtime(filterset.form.cleaned_data[name]).isoformat()
    return given


def record_export(request, fmt: str, filterset) -> LogEntry:
    user = request.user
    zone = timezone.get_current_timezone_name()
    given = recorded_filters(filterset)
    described = ", ".join(f"{name}={value}" for name, value in given.items()) or "all calls"
    return LogEntry.objects.create(
        content_type=ContentType.objects.get_for_model(RequestLog),
        object_pk="export",
        object_repr=f"request log export ({fmt}, times in {zone}): {described}"[:500],
        action=LogEntry.Action.ACCESS,
        changes={},
        actor=user,
        remote_addr=getattr(request, "client_ip", "") or request.META.get("REMOTE_ADDR") or None,
        additional_data={"actor": user.get_username()},  # the history middleware's own, when it runs
        serialized_data={"export": {"format": fmt, "filters": given, "time_zone": zone}},
    )
