"""Imports point down only: the data layer never imports the proxy (docs/architecture.md)."""

import ast
from pathlib import Path

from tests.source_files import parsed

ROOT = Path(__file__).resolve().parents[2]
# routes_admin holds the data layer (models, migrations, key hashing, validators) and, above it,
# the admin (admin*.py) and the management commands: the back office.
BACK_OFFICE = ("admin", "management")
ABOVE_THE_DATA_LAYER = ("proxy", "jobs", "api", "console")


def data_layer_modules() -> list[Path]:
    return [
        path
        for path in (ROOT / "routes_admin").rglob("*.py")
        if not path.relative_to(ROOT / "routes_admin").parts[0].startswith(BACK_OFFICE)
    ]


def imported_modules(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(parsed(path)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def test_no_data_layer_module_imports_the_proxy_or_anything_above_it():
    offenders = {
        str(path.relative_to(ROOT)): sorted(
            name for name in imported_modules(path) if name.split(".")[0] in ABOVE_THE_DATA_LAYER
        )
        for path in data_layer_modules()
    }
    assert "routes_admin/models.py" in offenders  # the walk found the data layer
    assert {path: names for path, names in offenders.items() if names} == {}


def proxy_imports(path: Path) -> set[str]:
    """The proxy modules `path` imports, `from proxy import x` counted as `proxy.x`."""
    found = set()
    for node in ast.walk(parsed(path)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.split(".")[0] == "proxy")
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "proxy":
                found.update(f"proxy.{alias.name}" for alias in node.names)
            elif node.module.startswith("proxy."):
                found.add(node.module)
    return found


def test_the_jobs_app_sees_the_proxy_only_through_its_one_door():
    """Every proxy import of jobs/ goes through proxy/jobs_api.py, so the proxy's inside can change freely."""
    seen = {str(path.relative_to(ROOT)): proxy_imports(path) for path in (ROOT / "jobs").rglob("*.py")}
    assert seen["jobs/running.py"] == {"proxy.jobs_api"}  # the walk reads the worker's imports
    assert {path: sorted(names) for path, names in seen.items() if names - {"proxy.jobs_api"}} == {}
