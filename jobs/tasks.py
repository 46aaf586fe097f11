"""The webhook task's former home: task rows queued before it moved name `jobs.tasks.deliver_webhook`,
so the name still leads to it (jobs/webhooks.py defines it now, beside what it delivers).

Jobs themselves are claimed from their own table (jobs/queue.py)."""

from .webhooks import deliver_webhook

__all__ = ["deliver_webhook"]
