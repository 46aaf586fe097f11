"""apply_config reads only the environment variables meant for credentials, and bounds the YAML
(size, anchors and aliases, nesting) before building anything from it."""

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from routes_admin import config_file
from routes_admin.models import Route, UpstreamTarget
from tests.factories import make_route, make_target

pytestmark = pytest.mark.django_db

ROUTE = "version: 1\nplans: []\nroutes:\n- name: r\n  path_prefix: /v1\n  targets:\n"
TARGET = (
    "  - name: t\n    url: http://127.0.0.1:9/\n    credential_header: Authorization\n"
    "    credential_value: ${{ENV:{variable}}}\n"
)


def apply(tmp_path, text: str, *args) -> str:
    path = tmp_path / "gateway.yaml"
    path.write_text(text)
    out = StringIO()
    call_command("apply_config", str(path), *args, stdout=out)
    return out.getvalue()


def test_a_reference_to_a_variable_outside_the_credential_prefix_is_refused(tmp_path, monkeypatch, settings):
    monkeypatch.setenv("SECRET_KEY", settings.SECRET_KEY)
    make_route(name="r")
    for variable in ("SECRET_KEY", "DATABASE_URL", "HOME", "GATEWAY_CREDENTIAL_", "gateway_credential_x"):
        with pytest.raises(CommandError) as raised:
            apply(tmp_path, ROUTE + TARGET.format(variable=variable), "--yes")
        message = str(raised.value)
        assert "line 10: " in message and "GATEWAY_CREDENTIAL_..." in message and "Nothing was changed" in message
    assert not UpstreamTarget.objects.exists()


def test_the_diff_names_the_credential_variable_never_its_value(tmp_path, monkeypatch):
    make_route(name="r")
    monkeypatch.setenv("GATEWAY_CREDENTIAL_R_T", "Bearer first-secret-1111")
    text = ROUTE + TARGET.format(variable="GATEWAY_CREDENTIAL_R_T")
    out = apply(tmp_path, text)
    assert "credential_value from $GATEWAY_CREDENTIAL_R_T" in out and "first-secret" not in out
    apply(tmp_path, text, "--yes")
    assert UpstreamTarget.objects.get().credential_value == "Bearer first-secret-1111"

    monkeypatch.setenv("GATEWAY_CREDENTIAL_R_T", "Bearer second-secret-2222")
    out = apply(tmp_path, text)
    assert "credential_value: (changed, from $GATEWAY_CREDENTIAL_R_T)" in out
    assert "secret-" not in out


def test_anchors_and_aliases_are_refused_before_anything_is_built(tmp_path):
    make_target(make_route(name="r"), "http://127.0.0.1:9/", name="t")
    shared = (
        ROUTE + "  - name: t\n    url: http://127.0.0.1:9/\n    model_aliases: &aliases {fast: small}\n"
        "  - name: u\n    url: http://127.0.0.1:9/\n    model_aliases: *aliases\n"
    )
    with pytest.raises(CommandError, match="line 9: anchors and aliases .* are not accepted"):
        apply(tmp_path, shared, "--yes")
    merged = ROUTE.replace("- name: r\n", "- &base\n  name: r\n") + "- <<: *base\n  name: s\n"
    with pytest.raises(CommandError, match="line 4: anchors and aliases"):
        apply(tmp_path, merged, "--yes")
    assert list(UpstreamTarget.objects.values_list("name", flat=True)) == ["t"]


def test_a_billion_laughs_file_is_refused_at_its_first_anchor(tmp_path):
    """Nine levels of ten aliases each: 10**9 strings if it were built."""
    lines = ['a0: &a0 "lol"'] + [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 10)]
    bomb = "\n".join(lines) + "\nversion: 1\nplans: []\nroutes: *a9\n"
    assert len(bomb) < 1500
    with pytest.raises(CommandError, match="line 1: anchors and aliases"):
        apply(tmp_path, bomb)


def test_deep_nesting_is_refused_with_its_line(tmp_path):
    deep = ROUTE + "  - name: t\n    url: http://127.0.0.1:9/\n    model_aliases: " + "[" * 5000 + "]" * 5000 + "\n"
    with pytest.raises(CommandError, match=f"line 9: nested more than {config_file.MAX_DEPTH} levels deep"):
        apply(tmp_path, deep)


def test_a_file_over_the_size_limit_is_refused_before_it_is_parsed(tmp_path):
    valid = ROUTE + "  - name: t\n    url: http://127.0.0.1:9/\n"
    padding = "# padding\n" * (config_file.MAX_FILE_BYTES // 10)
    assert len(valid) < config_file.MAX_FILE_BYTES < len(valid + padding)
    with pytest.raises(CommandError, match="larger than 1,000,000 bytes"):
        apply(tmp_path, valid + padding, "--yes")
    assert not Route.objects.exists()
    with pytest.raises(config_file.ConfigError, match="larger than"):
        config_file.load(valid + padding)
    apply(tmp_path, valid, "--yes")  # the same file under the limit applies
    assert Route.objects.get().name == "r"


def test_a_file_that_is_not_utf8_is_refused(tmp_path):
    path = tmp_path / "gateway.yaml"
    path.write_bytes(b"version: 1\nplans: []\nroutes: []\n# \xff\xfe\n")
    with pytest.raises(CommandError, match="not UTF-8"):
        call_command("apply_config", str(path), stdout=StringIO())
