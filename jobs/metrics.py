"""Job series for /metrics, read from the database at each scrape (workers may run anywhere).

- gateway_job_queue_depth{route}: jobs waiting (queued) now;
- gateway_jobs_running{route}: jobs running now;
- gateway_job_latency_seconds{route,quantile}: submission to end, over the jobs that finished in
  the last LATENCY_WINDOW seconds (quantile 0.5, 0.95 and 1 for the slowest).
"""

import logging
from datetime import timedelta

from django.db.models import Count, F
from django.utils import timezone
from prometheus_client.core import GaugeMetricFamily

from .models import Job, Status

log = logging.getLogger("gateway.metrics")
LATENCY_WINDOW = 300
QUANTILES = (0.5, 0.95, 1.0)


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


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
        except Exception:  # the database is away: no job series rather than a failed scrape
            log.warning("could not read job state for /metrics", exc_info=True)
        yield depth
        yield running
        yield latency
