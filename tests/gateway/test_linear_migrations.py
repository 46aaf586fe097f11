"""Each of our apps' migrations form one line, and its max_migration.txt names the last one.

Two branches that each add a migration then conflict in git (both change max_migration.txt)
instead of at merge time. django-linear-migrations' system check (dlm.E001-E005) covers a stale
or missing file and two leaves; `forks` below also covers two migrations on one parent that a
merge migration joined again.
"""

import shutil
import sys
import uuid
from collections import defaultdict
from pathlib import Path

from django.core.checks import Tags, run_checks
from django.db.migrations.loader import MigrationLoader

ROOT = Path(__file__).resolve().parents[2]
APPS = ("routes_admin", "jobs")


def forks(loader: MigrationLoader, app_label: str) -> dict[str, list[str]]:
    """Migrations of the app that more than one migration of the same app depends on."""
    children = defaultdict(list)
    for (label, name), migration in loader.disk_migrations.items():
        if label != app_label:
            continue
        for parent_label, parent in migration.dependencies:
            if parent_label == app_label:
                children[parent].append(name)
    return {parent: sorted(names) for parent, names in children.items() if len(names) > 1}


def linear_migration_errors() -> list[str]:
    """What `manage.py check` says about our migrations' line, plus any fork."""
    errors = [f"{e.id}: {e.msg}" for e in run_checks(tags=[Tags.models]) if e.id.startswith("dlm.")]
    loader = MigrationLoader(None, ignore_no_migrations=True)
    for app_label in APPS:
        errors += [f"fork in {app_label}: {p} -> {', '.join(c)}" for p, c in forks(loader, app_label).items()]
    return errors


def test_our_migrations_are_linear_and_max_migration_txt_is_current():
    assert linear_migration_errors() == []
    for app_label in APPS:
        assert (ROOT / app_label / "migrations" / "max_migration.txt").is_file()


# The checks must catch what they are for: on a copy of the jobs app's migrations with more added.

ADDED = """from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [{dependencies}]
    operations = []
"""


def jobs_migrations_with(tmp_path, monkeypatch, settings, added: dict[str, list[str]], max_migration: str) -> None:
    """The jobs app's migrations copied to a new package, with `added` (name -> parents) next to them."""
    package = f"migrations_{uuid.uuid4().hex[:8]}"
    folder = tmp_path / package
    shutil.copytree(ROOT / "jobs" / "migrations", folder, ignore=shutil.ignore_patterns("__pycache__"))
    for name, parents in added.items():
        dependencies = ", ".join(f"('jobs', {parent!r})" for parent in parents)
        (folder / f"{name}.py").write_text(ADDED.format(dependencies=dependencies))
    (folder / "max_migration.txt").write_text(max_migration + "\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    settings.MIGRATION_MODULES = {"jobs": package}
    monkeypatch.delitem(sys.modules, package, raising=False)


# The jobs app's last migration today: the added ones build on it.
LAST = (ROOT / "jobs" / "migrations" / "max_migration.txt").read_text().strip()


def test_two_migrations_on_one_parent_are_caught(tmp_path, monkeypatch, settings):
    added = {"9001_one_branch": [LAST], "9001_other_branch": [LAST]}
    jobs_migrations_with(tmp_path, monkeypatch, settings, added, "9001_one_branch")
    errors = linear_migration_errors()
    assert any(e.startswith("dlm.E005") for e in errors)
    assert f"fork in jobs: {LAST} -> 9001_one_branch, 9001_other_branch" in errors


def test_a_fork_joined_by_a_merge_migration_is_caught(tmp_path, monkeypatch, settings):
    added = {
        "9001_one_branch": [LAST],
        "9001_other_branch": [LAST],
        "9002_merge": ["9001_one_branch", "9001_other_branch"],
    }
    jobs_migrations_with(tmp_path, monkeypatch, settings, added, "9002_merge")
    assert linear_migration_errors() == [f"fork in jobs: {LAST} -> 9001_one_branch, 9001_other_branch"]


def test_a_stale_max_migration_txt_is_caught(tmp_path, monkeypatch, settings):
    jobs_migrations_with(tmp_path, monkeypatch, settings, {"9001_next": [LAST]}, LAST)
    errors = linear_migration_errors()
    assert len(errors) == 1 and errors[0].startswith("dlm.E004"), errors
