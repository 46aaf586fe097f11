"""`manage.py jobs_worker`: run queued jobs and webhook deliveries until stopped.

django-tasks-db's worker loop (claim a READY task with SELECT ... FOR UPDATE SKIP LOCKED, run
it, mark it), plus:
- a lease keeper thread for at-least-once delivery (jobs/leases.py);
- SIGTERM (or Ctrl-C) lets the running job finish for up to GATEWAY_JOB_SHUTDOWN_SECONDS; past
  that the job is queued again at once and the worker exits. A second signal exits at once.
Start as many as you like, on as many machines as share the database.
"""

import os
import signal
import socket

from django.conf import settings
from django.core.management.base import BaseCommand
from django_tasks_db.management.commands.db_worker import Worker

from jobs import leases
from jobs.running import WorkerStopping


class JobWorker(Worker):
    def shutdown(self, signum, frame) -> None:
        if self.running and self.running_task:
            signal.signal(signal.SIGALRM, self.out_of_time)
            signal.setitimer(signal.ITIMER_REAL, max(0.01, settings.GATEWAY_JOB_SHUTDOWN_SECONDS))
        super().shutdown(signum, frame)

    def out_of_time(self, signum, frame) -> None:
        raise WorkerStopping(
            f"the running job outlived the shutdown timeout ({settings.GATEWAY_JOB_SHUTDOWN_SECONDS} s)"
        )


class Command(BaseCommand):
    help = "Run queued jobs (asynchronous calls) and their webhook deliveries."

    def add_arguments(self, parser):
        parser.add_argument("--worker-id", default="", help="Unique per worker (default: host:pid).")
        parser.add_argument("--max-tasks", type=int, default=None, help="Exit after this many tasks.")

    def handle(self, *args, worker_id="", max_tasks=None, **options):
        worker_id = (worker_id or f"{socket.gethostname()}:{os.getpid()}")[:64]
        keeper = leases.Keeper(worker_id)
        keeper.start()
        worker = JobWorker(
            queue_names=["jobs", "webhooks"],
            interval=settings.GATEWAY_JOB_POLL_SECONDS,
            batch=False,
            backend_name="default",
            startup_delay=False,
            max_tasks=max_tasks,
            worker_id=worker_id,
            excluded_queue_names=[],
        )
        worker.configure_signals()
        self.stdout.write(f"jobs worker {worker_id} started", self.style.SUCCESS)
        try:
            worker.run()
        finally:
            keeper.stopping.set()
