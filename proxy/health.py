"""/healthz: the process answers. /readyz: it can reach its database and cache, and its last
request log write succeeded."""

import logging

from django.core.cache import cache
from django.db import connection
from django.http import JsonResponse

from . import recording

log = logging.getLogger("gateway.health")


def healthz(request):
    return JsonResponse({"status": "ok"})


def readyz(request):
    checks = {}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        checks["database"] = "ok"
    except Exception as exc:
        log.warning("readiness: database unreachable: %s", exc)
        checks["database"] = "unreachable"
    try:
        cache.set("readyz", 1, timeout=10)
        checks["cache"] = "ok" if cache.get("readyz") == 1 else "unreachable"
    except Exception as exc:
        log.warning("readiness: cache unreachable: %s", exc)
        checks["cache"] = "unreachable"
    # This process's writer: rows kept for later mean the log is behind (see proxy/recording.py).
    checks["request_log"] = "failing" if recording.failing() else "ok"
    ready = all(value == "ok" for value in checks.values())
    return JsonResponse({"status": "ok" if ready else "unavailable", "checks": checks}, status=200 if ready else 503)
