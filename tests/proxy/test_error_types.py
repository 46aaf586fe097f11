"""ErrorType (routes_admin/models.py) is the one list of error types: every error the gateway
raises or answers has a type from it, and no module spells an error type as a string of its own."""

import ast
from pathlib import Path

from jobs import submission  # noqa: F401  (its errors are GatewayError subclasses too)
from proxy import attempts, errors, pipeline  # noqa: F401
from routes_admin.models import ErrorType, RequestLog
from tests.source_files import parsed

ROOT = Path(__file__).resolve().parents[2]
CODE = ("proxy", "jobs", "api", "console", "routes_admin", "gateway_project")
# The gunicorn worker class is imported by the master before Django is set up, so it cannot
# import the models: its table is checked against the list instead.
WORKER = ROOT / "gateway_project" / "worker.py"


def subclasses(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from subclasses(sub)


def test_every_gateway_error_has_a_type_from_the_list():
    found = {cls.__name__: cls.error_type for cls in subclasses(errors.GatewayError)}
    assert len(found) >= 12  # the walk found the proxy's and the jobs' errors
    assert {name: kind for name, kind in found.items() if kind not in ErrorType.values} == {}
    assert set(errors.DRF_TYPES.values()) <= set(ErrorType.values)


def test_the_log_takes_its_error_types_from_the_list():
    assert RequestLog.ErrorType is ErrorType
    assert dict(RequestLog._meta.get_field("error_type").choices) == dict(ErrorType.choices)


def test_no_module_spells_an_error_type_itself():
    spelled = []
    for package in CODE:
        for path in (ROOT / package).rglob("*.py"):
            if "migrations" in path.parts or path in (ROOT / "routes_admin" / "models.py", WORKER):
                continue
            for node in ast.walk(parsed(path)):
                if isinstance(node, ast.Constant) and node.value in ErrorType.values:
                    spelled.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.value!r}")
    assert spelled == []


def test_the_server_s_own_error_answers_use_types_from_the_list():
    from gateway_project.worker import SERVER_ERROR_TYPES

    assert set(SERVER_ERROR_TYPES.values()) <= set(ErrorType.values)
