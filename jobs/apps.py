from django.apps import AppConfig


class JobsConfig(AppConfig):
    name = "jobs"
    verbose_name = "Jobs"

    def extend_runtime(self, runtime) -> None:
        """Called for every process's runtime as it is built (proxy/runtime.py). Layers: jobs sits
        above the proxy, so the proxy learns of jobs only through these hooks."""
        from proxy import jobs_api

        from .alerts import schedule
        from .metrics import JobCollector
        from .submission import check, submit

        jobs_api.register(runtime, submit, check, JobCollector(), send_alerts=schedule)
