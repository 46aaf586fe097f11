"""A model change without its migration fails the suite."""

from io import StringIO

import pytest
from django.core.management import call_command


@pytest.mark.django_db
def test_no_migration_is_missing():
    out = StringIO()
    try:
        call_command("makemigrations", "--check", "--dry-run", stdout=out, stderr=out)
    except SystemExit as exc:  # --check exits non-zero when a migration is missing
        pytest.fail(f"missing migrations (exit {exc.code}):\n{out.getvalue()}")
    assert "No changes detected" in out.getvalue()


@pytest.mark.django_db(transaction=True)
def test_targets_stored_with_a_password_in_their_url_get_it_moved_into_the_credential_header():
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(connection)
    executor.migrate([("routes_admin", "0010_roles_records")])
    old = executor.loader.project_state([("routes_admin", "0010_roles_records")]).apps
    route = old.get_model("routes_admin", "Route").objects.create(name="r", path_prefix="/v1")
    Target = old.get_model("routes_admin", "UpstreamTarget")
    Target.objects.create(route=route, name="u:s3cret@10.0.0.5:8000", url="http://u:s3cret@10.0.0.5:8000/v1")
    Target.objects.create(route=route, name="10.0.0.5:8000", url="http://10.0.0.5:8000/v2")  # its name is taken
    Target.objects.create(
        route=route, name="kept", url="http://a:b@10.0.0.6/v1", credential_header="X-Key", credential_value="k"
    )
    Target.objects.create(route=route, name="plain", url="http://10.0.0.7/v1?user=a@b")

    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())

    from routes_admin.models import UpstreamTarget

    moved = {t.url: (t.name, t.credential_header, t.credential_value) for t in UpstreamTarget.objects.all()}
    assert moved == {
        "http://10.0.0.5:8000/v1": ("10.0.0.5:8000-2", "Authorization", "Basic dTpzM2NyZXQ="),
        "http://10.0.0.5:8000/v2": ("10.0.0.5:8000", "", ""),
        "http://10.0.0.6/v1": ("kept", "X-Key", "k"),
        "http://10.0.0.7/v1?user=a@b": ("plain", "", ""),
    }
    assert not any("s3cret" in str(value) for row in moved.items() for value in row)
