"""/healthz: the process answers. /readyz: it can serve calls (its cache answers and it has a
configuration: from the database, or its last good copy while the database is unreachable).

A database that is unreachable, a stale configuration or request-log writes that fail make the
instance "degraded": still ready (200), and said so. With a shared database every instance is in
that state at once, and taking them all out of the load balancer would stop the calls they can
still serve; their log rows wait in memory and are written when the database is back."""

import logging

from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.http import JsonResponse

from . import config, database, recording

log = logging.getLogger("gateway.health")


def healthz(request):
    return JsonResponse({"status": "ok"})


def readyz(request):
    checks = {}
    try:
        database.connect(settings.GATEWAY_CONFIG_DB_TIMEOUT)  # not the pool's 10 s when it is down
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
    checks["config"] = config.state()
    # This process's writer: rows kept for later mean the log is behind (see proxy/recording.py).
    checks["request_log"] = "failing" if recording.failing() else "ok"
    ready = checks["cache"] == "ok" and checks["config"] != "unavailable"
    status = "ok" if all(value == "ok" for value in checks.values()) else "degraded" if ready else "unavailable"
    return JsonResponse({"status": status, "checks": checks}, status=200 if ready else 503)
