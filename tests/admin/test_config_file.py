"""Configuration as code (export_config, apply_config)."""

from io import StringIO

import pytest
import yaml
from django.core.management import CommandError, call_command

from routes_admin.models import APIKey, QuotaPlan, Route, UpstreamTarget
from tests.factories import make_key, make_plan, make_route, make_target

pytestmark = pytest.mark.django_db


def export() -> str:
    out = StringIO()
    call_command("export_config", stdout=out, stderr=StringIO())
    return out.getvalue()


def apply(tmp_path, text: str, *args) -> str:
    path = tmp_path / "gateway.yaml"
    path.write_text(text)
    out = StringIO()
    call_command("apply_config", str(path), *args, stdout=out)
    return out.getvalue()


@pytest.fixture
def configured():
    plan = make_plan(name="standard", requests_per_minute=60, tokens_per_day=100_000)
    spare = make_route(name="spare", path_prefix="/v1", priority=-1)
    make_target(spare, "http://127.0.0.1:9001/v1", name="local")
    chat = make_route(
        name="chat",
        path_prefix="/v1",
        model_names="gpt-4o",
        fallback=spare,
        quota_plan=plan,
        processing_mode="async",
        max_concurrent_jobs=2,
    )
    make_target(
        chat,
        "http://127.0.0.1:9000/v1",
        name="openai",
        credential_header="Authorization",
        credential_value="Bearer sk-secret-value-1234",
        model_aliases={"fast": "gpt-4o-mini"},
    )
    return chat


def test_export_writes_credentials_as_environment_references(configured):
    text = export()
    assert "sk-secret" not in text
    document = yaml.safe_load(text)
    assert [plan["name"] for plan in document["plans"]] == ["standard"]
    chat = next(route for route in document["routes"] if route["name"] == "chat")
    assert chat["fallback"] == "spare" and chat["quota_plan"] == "standard"
    assert chat["targets"][0]["credential_value"] == "${ENV:GATEWAY_CREDENTIAL_CHAT_OPENAI}"


def test_export_then_apply_on_an_empty_database_rebuilds_the_same_configuration(configured, tmp_path, monkeypatch):
    text = export()
    key, _ = make_key(routes=[configured])
    UpstreamTarget.objects.all().delete()
    Route.objects.all().delete()
    QuotaPlan.objects.all().delete()
    monkeypatch.setenv("GATEWAY_CREDENTIAL_CHAT_OPENAI", "Bearer sk-secret-value-1234")
    out = apply(tmp_path, text, "--yes")
    assert "+ create route chat" in out and "+ create target chat/openai" in out and "Applied" in out
    assert "sk-secret" not in out
    assert export() == text
    target = UpstreamTarget.objects.get(name="openai")
    assert target.credential_value == "Bearer sk-secret-value-1234"
    chat = Route.objects.get(name="chat")
    assert (chat.fallback.name, chat.processing_mode, chat.max_concurrent_jobs) == ("spare", "async", 2)
    assert APIKey.objects.get(pk=key.pk)  # keys are not part of the file and are left alone


def test_applying_the_exported_file_changes_nothing(configured, tmp_path):
    text = export()
    # The credential's variable is not set here: the stored credential is kept.
    assert apply(tmp_path, text).startswith("No changes")
    assert apply(tmp_path, text, "--yes").startswith("No changes")
    assert UpstreamTarget.objects.get(name="openai").credential_value == "Bearer sk-secret-value-1234"


def test_an_edit_shows_its_diff_and_is_applied_only_with_yes(configured, tmp_path):
    text = export().replace("read_timeout: 300.0", "read_timeout: 30.0", 1)
    text = text.replace("requests_per_minute: 60", "requests_per_minute: 120")
    diff = apply(tmp_path, text)
    assert "~ update plan standard\n    requests_per_minute: 60 -> 120" in diff
    assert "read_timeout: 300.0 -> 30.0" in diff
    assert "not applied" in diff
    assert QuotaPlan.objects.get().requests_per_minute == 60
    apply(tmp_path, text, "--yes")
    assert QuotaPlan.objects.get().requests_per_minute == 120
    assert apply(tmp_path, text, "--yes").startswith("No changes")  # applying twice changes nothing


def test_a_route_missing_from_the_file_is_deleted(configured, tmp_path):
    document = yaml.safe_load(export())
    document["routes"] = [route for route in document["routes"] if route["name"] == "spare"]
    make_key(routes=[configured])
    diff = apply(tmp_path, yaml.safe_dump(document), "--yes")
    assert "- delete route chat\n    1 key(s) lose this route" in diff
    assert list(Route.objects.values_list("name", flat=True)) == ["spare"]


def line_of(text: str, fragment: str) -> int:
    return next(number for number, line in enumerate(text.splitlines(), 1) if fragment in line)


def test_an_invalid_value_changes_nothing_and_names_its_line(configured, tmp_path):
    text = export().replace("requests_per_minute: 60", "requests_per_minute: 120")
    text = text.replace(
        "- name: chat\n  enabled: true\n  path_prefix: /v1", "- name: chat\n  enabled: true\n  path_prefix: /admin/v1"
    )
    assert "/admin/v1" in text
    with pytest.raises(CommandError) as raised:
        apply(tmp_path, text, "--yes")
    message = str(raised.value)
    assert f"line {line_of(text, '/admin/v1')}: route chat: path_prefix: /admin is reserved" in message
    assert message.endswith("reserved for the gateway itself. Nothing was changed.")
    assert QuotaPlan.objects.get().requests_per_minute == 60  # the valid edit before it was not applied either


def test_a_target_the_ssrf_guard_refuses_names_its_line(configured, tmp_path):
    text = export().replace("http://127.0.0.1:9001/v1", "http://169.254.169.254/latest")
    with pytest.raises(CommandError) as raised:
        apply(tmp_path, text, "--yes")
    assert f"line {line_of(text, '169.254.169.254')}: route spare, target local" in str(raised.value)
    assert UpstreamTarget.objects.get(name="local").url == "http://127.0.0.1:9001/v1"


def test_a_literal_credential_is_refused_with_its_line(configured, tmp_path):
    text = export().replace("${ENV:GATEWAY_CREDENTIAL_CHAT_OPENAI}", "Bearer sk-pasted-secret")
    with pytest.raises(CommandError) as raised:
        apply(tmp_path, text, "--yes")
    assert f"line {line_of(text, 'sk-pasted-secret')}: " in str(raised.value)
    assert "never the secret itself" in str(raised.value)


def test_broken_yaml_and_unknown_fields_name_their_line(configured, tmp_path):
    text = export()
    broken = text.replace("priority: -1", "priority: [-1")
    with pytest.raises(CommandError, match=r"line \d+: not valid YAML"):
        apply(tmp_path, broken)
    typo = text.replace("  priority: -1", "  priorty: -1")
    with pytest.raises(CommandError) as raised:
        apply(tmp_path, typo)
    assert f"line {line_of(typo, 'priorty')}: route: unknown field 'priorty'" in str(raised.value)


def test_a_new_target_needs_its_credential_variable(tmp_path, monkeypatch):
    make_route(name="r")
    text = (
        "version: 1\nplans: []\nroutes:\n- name: r\n  path_prefix: /v1\n  targets:\n"
        "  - name: t\n    url: http://127.0.0.1:9/\n    credential_header: Authorization\n"
        "    credential_value: ${ENV:GATEWAY_CREDENTIAL_MY_CRED}\n"
    )
    monkeypatch.delenv("GATEWAY_CREDENTIAL_MY_CRED", raising=False)
    with pytest.raises(CommandError, match="line 10: .*GATEWAY_CREDENTIAL_MY_CRED is not set"):
        apply(tmp_path, text, "--yes")
    monkeypatch.setenv("GATEWAY_CREDENTIAL_MY_CRED", "Bearer abc")
    apply(tmp_path, text, "--yes")
    assert UpstreamTarget.objects.get().credential_value == "Bearer abc"
