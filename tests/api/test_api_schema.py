"""The OpenAPI schema validates, the docs page is served by the gateway, and
schemathesis, calling every operation as an admin, finds no 5xx and no answer the schema denies."""

import json
from io import StringIO

import pytest
import schemathesis
import yaml
from django.core.management import call_command
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.renderers import OpenApiJsonRenderer
from hypothesis import HealthCheck, settings
from hypothesis.stateful import run_state_machine_as_test
from schemathesis import checks

from gateway_project.wsgi import application
from routes_admin.models import ManagementToken
from tests.examples import examples
from tests.roles import make_user

pytestmark = pytest.mark.django_db


def test_the_schema_validates_without_warnings():
    out = StringIO()
    call_command("spectacular", "--validate", "--fail-on-warn", stdout=out)
    paths = yaml.safe_load(out.getvalue())["paths"]
    assert {"/api/routes/", "/api/keys/{id}/rotate/", "/api/logs/", "/api/history/", "/api/tokens/"} <= set(paths)
    assert all(path.startswith("/api/") for path in paths)  # not the proxy's catch-all
    # Every text filter refuses a NUL character, and says so: a pattern (or a closed list of values).
    text_filters = [
        (path, parameter["name"], parameter["schema"])
        for path, operations in paths.items()
        for operation in operations.values()
        for parameter in operation.get("parameters", [])
        if parameter["in"] == "query" and parameter["schema"].get("type") == "string"
    ]
    assert ("/api/logs/", "model", {"type": "string", "pattern": "^[^\\x00]*$"}) in text_filters
    assert all("pattern" in schema or "enum" in schema for _, _, schema in text_filters)


def test_the_schema_and_docs_page_are_served_without_a_cdn(client):
    client.force_login(make_user("auditor"))
    schema = client.get("/api/schema/")
    assert schema.status_code == 200
    page = client.get("/api/docs/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "swagger-ui" in html and "//cdn" not in html and "unpkg" not in html
    bundle = next(part.split('"')[0] for part in html.split('src="')[1:] if "swagger-ui-bundle" in part)
    assert bundle.startswith("/static/")
    assert client.get(bundle).status_code == 200  # served by the gateway (whitenoise, from the app)


@pytest.fixture
def admin_token(db):
    return ManagementToken.objects.issue(make_user("admin"), "schemathesis")


@pytest.fixture
def test_transaction_kept():
    """What Django's test client does: the calls must not close the connection that holds the test's
    transaction (with PostgreSQL's pool, Django would otherwise try to reopen it inside it)."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


def load_schema() -> schemathesis.schemas.BaseSchema:
    """The schema the gateway serves, made at collection by the same generator without a request
    (/api/schema/ needs a token, and tokens need the database); calls then go through WSGI."""
    raw = SchemaGenerator().get_schema(request=None, public=True)
    loaded = schemathesis.openapi.from_dict(json.loads(OpenApiJsonRenderer().render(raw)))
    loaded.app = application
    return loaded


schema = load_schema()
# The coverage phase alone sends about 3,000 boundary-value calls: too slow for every test run.
schema.config.phases.coverage.enabled = False


def authenticated(secret: str) -> dict:
    return {"Authorization": f"Bearer {secret}"}


def keep_valid(token) -> None:
    """The run may DELETE (revoke) the token it authenticates with: keep it valid for the next call."""
    ManagementToken.objects.filter(pk=token.pk).update(revoked=None)


def excluded_checks(case) -> list:
    """Every check (`--checks all`) on reads. On writes, all but "schema-valid input is accepted":
    a write the schema allows may still be refused for what no schema can state (an id that names no
    object, a name already taken, a target host the SSRF guard refuses after resolving it).
    A cursor is an opaque token that a previous page gave: any other string is refused (400), which
    no schema can state, so a read that carries a generated cursor skips that one check too."""
    reads = case.method.upper() in ("GET", "HEAD")
    query = case.query or {}
    return [] if reads and "cursor" not in query else [checks.positive_data_acceptance]


# No 5xx, documented statuses, content types, headers and bodies; schema-violating input refused
# (a wrong JSON type, an invalid or repeated filter, a bad page size, text with a NUL character);
# schema-valid reads accepted, so the schema states every rule of the filters.
@schema.parametrize()
# Derandomized: the suite gives the same verdict on every run; bounded to stay well under a minute.
@settings(max_examples=examples(8), derandomize=True, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_operation_answers_as_its_schema_says(case, admin_token, test_transaction_kept):
    token, secret = admin_token
    keep_valid(token)
    case.call_and_validate(headers=authenticated(secret), excluded_checks=excluded_checks(case))


def test_sequences_of_calls_answer_as_the_schema_says(admin_token, test_transaction_kept):
    """The stateful phase: calls chained through the links schemathesis infers (create a route, then
    read, update and delete it; issue a key, rotate it, revoke it...), every check on every answer."""
    token, secret = admin_token

    class Workflow(schema.as_state_machine()):
        def get_call_kwargs(self, case):
            keep_valid(token)
            return {"headers": authenticated(secret)}

        def validate_response(self, response, case, additional_checks=None, **kwargs):
            case.validate_response(
                response,
                additional_checks=additional_checks,
                excluded_checks=excluded_checks(case),
                headers=authenticated(secret),  # the token is the run's own, not generated auth
                transport_kwargs=kwargs or None,
                recorder=self.recorder,
            )

    run_state_machine_as_test(
        Workflow,
        settings=settings(
            max_examples=examples(5),
            stateful_step_count=5,
            derandomize=True,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        ),
    )
