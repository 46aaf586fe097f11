from django.apps import AppConfig


class JobsConfig(AppConfig):
    name = "jobs"
    verbose_name = "Jobs"

    def ready(self) -> None:
        # Layers: jobs sits above the proxy, so the proxy learns of jobs only through these hooks.
        from proxy import metrics, pipeline

        from . import metrics as job_metrics
        from .submission import check, submit

        pipeline.set_job_submitter(submit, check)
        metrics.add_collector(job_metrics.JobCollector())
