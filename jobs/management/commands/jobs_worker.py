"""`manage.py jobs_worker`: run queued jobs and webhook deliveries until stopped.

Each turn a worker takes the next job (jobs/queue.py: fair across keys) and the next due webhook
delivery (django-tasks-db's task rows, claimed with SELECT ... FOR UPDATE SKIP LOCKED), then
sleeps GATEWAY_JOB_POLL_SECONDS when there was nothing to do. Besides:
- a keeper thread renews its leases and beat and recovers lost work (jobs/leases.py);
- the database may go away at any time: the worker logs it, waits (0.5 s, doubling up to 30 s)
  and tries again, for as long as it takes. It never exits for it; what it held is recovered
  through its leases if it cannot finish it;
- SIGTERM (or Ctrl-C) lets the running job finish for up to GATEWAY_JOB_SHUTDOWN_SECONDS; past
  that the job is queued again at once and the worker exits. A second signal exits at once.
Start as many as you like, on as many machines as share the database.
"""

import logging
import os
import signal
import socket
import time

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import Error as DatabaseError
from django.db import close_old_connections
from django_tasks_db.management.commands.db_worker import Worker
from django_tasks_db.models import DBTaskResult
from django_tasks_db.utils import exclusive_transaction

from jobs import leases, queue, running
from jobs.running import WorkerStopping
from proxy.jobs_api import connect_database, start_runtime

log = logging.getLogger("gateway.jobs")
FIRST_BACKOFF, LAST_BACKOFF = 0.5, 30.0


class JobWorker(Worker):
    """django-tasks-db's worker (signals, running a task), with the gateway's own loop."""

    def run(self) -> None:
        log.info("jobs worker %s started", self.worker_id)
        backoff = 0.0
        while self.running:
            try:
                worked = self.turn()
            except Exception as exc:
                backoff = min(LAST_BACKOFF, backoff * 2 or FIRST_BACKOFF)
                if isinstance(exc, DatabaseError):
                    log.warning(
                        "jobs worker %s: the database failed (%s); again in %.1f s", self.worker_id, exc, backoff
                    )
                else:
                    log.exception("jobs worker %s: unexpected error; again in %.1f s", self.worker_id, backoff)
                self.forget_connections()
                time.sleep(backoff)
                continue
            if backoff:
                log.info("jobs worker %s: the database answers again", self.worker_id)
                backoff = 0.0
            if not worked and self.batch:
                return  # tests: everything due has run
            if self.max_tasks is not None and self._run_tasks >= self.max_tasks:
                return
            if self.running and not worked:
                time.sleep(self.interval)

    def turn(self) -> bool:
        """One job and one webhook delivery, if any is due; whether there was anything to do."""
        close_old_connections()
        connect_database(settings.GATEWAY_CONFIG_DB_TIMEOUT)  # an outage noticed in 1 s, not the pool's 10 s
        worked = False
        job = queue.claim_next(self.worker_id)
        if job is not None:
            worked = True
            self.run_job(job)
        if self.running and (self.max_tasks is None or self._run_tasks < self.max_tasks):
            delivery = self.claim_delivery()
            if delivery is not None:
                worked = True
                self.run_task(delivery)
        return worked

    def run_job(self, job) -> None:
        self.running_task = True
        try:
            running.run(job, self.worker_id)
        except WorkerStopping:
            pass  # the job is back in the queue (running.execute); the loop ends: self.running is False
        finally:
            self.running_task = False
            self._run_tasks += 1

    def claim_delivery(self) -> DBTaskResult | None:
        tasks = DBTaskResult.objects.ready().filter(backend_name=self.backend_name, queue_name=leases.WEBHOOK_QUEUE)
        with exclusive_transaction(tasks.db):
            task = tasks.get_locked()
            if task is not None:
                task.claim(self.worker_id)
        return task

    def forget_connections(self) -> None:
        try:
            close_old_connections()
        except Exception:
            pass  # a broken connection that cannot even close: the next query opens a new one

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
        start_runtime()  # this process's live state (configuration copy, log writer, ...), built once
        keeper = leases.Keeper(worker_id)
        keeper.start()
        worker = JobWorker(
            queue_names=[leases.WEBHOOK_QUEUE],
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
