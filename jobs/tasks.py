"""The queue's tasks (django-tasks, database backend): run a job, deliver its webhook."""

from django_tasks import TaskContext, task

from . import running, webhooks


@task(queue_name="jobs", takes_context=True)
def run_job(context: TaskContext, job_id: str) -> None:
    # The engine appends the worker's id when it claims the task: the last one is this worker.
    running.run(job_id, worker=context.task_result.worker_ids[-1])


@task(queue_name="webhooks")
def deliver_webhook(job_id: str, attempt: int) -> None:
    webhooks.deliver(job_id, attempt)
