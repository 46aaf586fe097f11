"""The time zone console pages show times in: the browser's, which a small script on every page
stores in a cookie (console.js); until it has, the server's TIME_ZONE. Pages name the zone."""

from contextlib import contextmanager
from urllib.parse import unquote
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.conf import settings
from django.utils import timezone

COOKIE = "console_tz"


def for_request(request) -> ZoneInfo:
    name = unquote(request.COOKIES.get(COOKIE, ""))
    if name and len(name) <= 64:
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            pass  # a made-up cookie: the server's zone
    return ZoneInfo(settings.TIME_ZONE)


@contextmanager
def activated(request):
    timezone.activate(for_request(request))
    try:
        yield
    finally:
        timezone.deactivate()
