from django.db import migrations, models
import django.utils.timezone


def create_the_row(apps, schema_editor):
    apps.get_model("routes_admin", "ConfigGeneration").objects.get_or_create(pk=1)


class Migration(migrations.Migration):

    dependencies = [
        ("routes_admin", "0002_requestlog_usage_estimated"),
    ]

    operations = [
        migrations.CreateModel(
            name="ConfigGeneration",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("n", models.BigIntegerField(default=0)),
                ("changed", models.DateTimeField(default=django.utils.timezone.now)),
            ],
        ),
        migrations.RunPython(create_the_row, migrations.RunPython.noop),
    ]
