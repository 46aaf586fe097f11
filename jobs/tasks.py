"""The queue's tasks (django-tasks, database backend): deliver a finished job's webhook.

Jobs themselves are claimed from their own table (jobs/queue.py)."""

from django_tasks import task

from . import webhooks


@task(queue_name="webhooks")
def deliver_webhook(job_id: str, attempt: int) -> None:
    webhooks.deliver(job_id, attempt)
