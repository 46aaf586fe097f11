import django.core.validators
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("routes_admin", "0003_configgeneration"),
    ]

    operations = [
        migrations.AddField(
            model_name="route",
            name="processing_mode",
            field=models.CharField(
                choices=[
                    ("sync", "sync (jobs on request)"),
                    ("async", "async (every call is a job)"),
                    ("sync-only", "sync only (no jobs)"),
                ],
                default="sync",
                help_text="sync: a call becomes a job only with Prefer: respond-async; async: every call is a job; sync-only: that header is refused.",
                max_length=10,
            ),
        ),
        migrations.AddField(
            model_name="route",
            name="max_concurrent_jobs",
            field=models.PositiveIntegerField(
                blank=True,
                help_text="Jobs of this route running at once, across all workers; more wait in the queue. Empty: no cap.",
                null=True,
                validators=[django.core.validators.MinValueValidator(1)],
            ),
        ),
        migrations.AddField(
            model_name="requestlog",
            name="job_id",
            field=models.UUIDField(blank=True, help_text="Set on a queued job's run (jobs/).", null=True),
        ),
        migrations.AddField(
            model_name="requestlog",
            name="queue_ms",
            field=models.FloatField(blank=True, help_text="A job's wait in the queue before this run.", null=True),
        ),
    ]
