"""Job series for /metrics, read from the database at each scrape (workers may run anywhere).

Every wait is bounded by GATEWAY_CONFIG_DB_TIMEOUT (1 s): for a connection, and per statement
(PostgreSQL's statement_timeout). With the database down or stuck the job series are left out.

- gateway_job_queue_depth{route}: jobs waiting (queued) now;
- gateway_jobs_running{route}: jobs running now;
- gateway_job_latency_seconds{route,quantile}: submission to end, over the jobs that finished in
  the last LATENCY_WINDOW seconds (quantile 0.5, 0.95 and 1 for the slowest).
"""

import logging
from datetime import timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, F
from django.utils import timezone
from prometheus_client.core import GaugeMetricFamily

from proxy.jobs_api import connect_database

from .models import Job, Status

log = logging.getLogger("gateway.metrics")
LATENCY_WINDOW = 300
QUANTILES = (0.5, 0.95, 1.0)


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def bound_statements() -> None:
    """This transaction's statements give up after GATEWAY_CONFIG_DB_TIMEOUT (PostgreSQL)."""
    if connection.vendor == "postgresql":
        timeout_ms = int(settings.GATEWAY_CONFIG_DB_TIMEOUT * 1000)
        with connection.cursor() as cursor:
            cursor.execute("SELECT set_config('statement_timeout', %s, true)", [f"{timeout_ms}ms"])


class JobCollector:
    def collect(self):
        depth = GaugeMetricFamily("gateway_job_queue_depth", "Jobs waiting in the queue, by route.", labels=["route"])
        running = GaugeMetricFamily("gateway_jobs_running", "Jobs running now, by route.", labels=["route"])
        latency = GaugeMetricFamily(
            "gateway_job_latency_seconds",
            f"Jobs' time from submission to end, over those finished in the last {LATENCY_WINDOW} s, by route.",
            labels=["route", "quantile"],
        )
        try:
            connect_database(settings.GATEWAY_CONFIG_DB_TIMEOUT)  # not the pool's 10 s when it is down
            with transaction.atomic():
                bound_statements()
                self.read(depth, running, latency)
        except Exception:  # the database is away or slow: no job series rather than a late scrape
            log.warning("could not read job state for /metrics", exc_info=True)
        yield depth
        yield running
        yield latency

    def read(self, depth, running, latency) -> None:
        counts = (
            Job.objects.filter(status__in=(Status.QUEUED, Status.RUNNING))
            .values_list("route_name", "status")
            .annotate(n=Count("id"))
            .order_by()
        )
        for route, status, n in counts:
            (depth if status == Status.QUEUED else running).add_metric([route], n)
        since = timezone.now() - timedelta(seconds=LATENCY_WINDOW)
        by_route: dict[str, list[float]] = {}
        finished = Job.objects.filter(finished__gte=since).annotate(took=F("finished") - F("created"))
        for route, took in finished.values_list("route_name", "took"):
            by_route.setdefault(route, []).append(took.total_seconds())
        for route, values in by_route.items():
            for q in QUANTILES:
                latency.add_metric([route, str(q)], quantile(values, q))
