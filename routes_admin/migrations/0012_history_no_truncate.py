"""On PostgreSQL, the database also refuses TRUNCATE of the change history.

Migration 0006's trigger refuses UPDATE and DELETE row by row; TRUNCATE fires no row trigger, and
`manage.py auditlogflush --truncate` (or `manage.py flush`) emptied the history. This statement
trigger refuses it, unless the session sets `gateway.allow_history_truncate = on`: the test suite
does (tests/settings.py), to empty its own database between tests with TRUNCATE as Django does.
Whoever may run SQL as the table's owner can drop a trigger too: this guards against the
application's own commands and mistakes, not against the database's owner (SECURITY.md).
"""

from django.db import migrations

CREATE = """
CREATE OR REPLACE FUNCTION gateway_history_no_truncate() RETURNS trigger AS $$
BEGIN
    IF current_setting('gateway.allow_history_truncate', true) = 'on' THEN
        RETURN NULL;
    END IF;
    RAISE EXCEPTION 'the change history is append-only: TRUNCATE refused'
        USING ERRCODE = 'insufficient_privilege';
END
$$ LANGUAGE plpgsql;

CREATE TRIGGER auditlog_logentry_no_truncate
    BEFORE TRUNCATE ON auditlog_logentry
    FOR EACH STATEMENT EXECUTE FUNCTION gateway_history_no_truncate();
"""

DROP = """
DROP TRIGGER IF EXISTS auditlog_logentry_no_truncate ON auditlog_logentry;
DROP FUNCTION IF EXISTS gateway_history_no_truncate();
"""


def create(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CREATE, params=None)


def drop(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP, params=None)


class Migration(migrations.Migration):
    dependencies = [
        ("routes_admin", "0011_move_url_credentials"),
    ]

    operations = [migrations.RunPython(create, drop)]
