"""The webhook delivery task is found under its new name and under the one older task rows keep."""

from django.utils.module_loading import import_string
from django_tasks.base import Task

from jobs import webhooks


def test_rows_queued_under_the_old_task_path_still_load_the_delivery_task():
    old = import_string("jobs.tasks.deliver_webhook")  # what DBTaskResult.task does with a stored task_path
    assert isinstance(old, Task)
    assert old is webhooks.deliver_webhook
    assert webhooks.deliver_webhook.module_path == "jobs.webhooks.deliver_webhook"
    assert webhooks.deliver_webhook.queue_name == webhooks.WEBHOOK_QUEUE
