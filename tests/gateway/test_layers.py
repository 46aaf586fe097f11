"""Imports point down only: the data layer never imports the proxy (docs/architecture.md)."""

import ast
from pathlib import Path

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
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
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
