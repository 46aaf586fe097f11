"""Joins the roles and history migrations (0005, 0006) with main's 0007 after the branches met."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("routes_admin", "0006_history_append_only"),
        ("routes_admin", "0007_requestlog_explain"),
    ]

    operations = []
