"""A target's stored credential follows its host, on every surface that can change a target.

An Operator who points a target at another scheme, host or port does not take the stored
credential along: it is dropped unless given again (and with its header still set, the change is
refused until it is). A path change keeps it. A credential the HTTP client could not send (CR, LF,
NUL, a bad header name) is refused when saved, and a stored one never reaches a log.
"""

import json
import logging
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from routes_admin.models import UpstreamTarget
from tests.admin_forms import form_values
from tests.factories import auth, make_key, make_route, make_target, make_user
from tests.roles import bearer, token_for

pytestmark = pytest.mark.django_db

CREDENTIAL = "Bearer sk-admin-set-0123456789-TOPSECRET"
HOME = "http://127.0.0.1:9/v1"  # where the Admin pointed the target (nothing listens there)


@pytest.fixture
def target():
    route = make_route(name="chat")
    return make_target(route, HOME, name="main", credential_header="Authorization", credential_value=CREDENTIAL)


def received_credential(client, upstream, target) -> str | None:
    """Call the target's route through the gateway; what the upstream got in Authorization."""
    _, secret = make_key(routes=[target.route])
    client.post("/v1/chat", b"{}", content_type="application/json", **auth(secret))
    return upstream.last.headers.get("authorization") if upstream.requests else None


# --- The admin, as an Operator, through the real form ---------------------------------------------


@pytest.fixture
def operator_client(client):
    client.force_login(make_user("otto", "Operator"))
    return client


def post_target_change(client, target, **changes):
    url = f"/admin/routes_admin/route/{target.route_id}/change/"
    data = form_values(client.get(url).content.decode(), "route_form")
    data.update({f"targets-0-{name}": value for name, value in changes.items()})
    return client.post(url, data)


def test_admin_repointing_a_target_refuses_to_carry_the_stored_credential(operator_client, upstream, target):
    response = post_target_change(operator_client, target, url=upstream.url)
    assert response.status_code == 200  # the form again, with the error
    page = response.content.decode()
    assert "the stored credential is not sent there" in page and "TOPSECRET" not in page
    assert UpstreamTarget.objects.get().url == HOME

    # Removing the header saves the new URL without any credential: nothing reaches that host.
    response = post_target_change(operator_client, target, url=upstream.url, credential_header="")
    assert response.status_code == 302
    saved = UpstreamTarget.objects.get()
    assert (saved.url, saved.credential_header, saved.credential_value) == (upstream.url, "", "")
    assert received_credential(operator_client, upstream, saved) is None


def test_admin_repointing_with_the_credential_given_again_stores_the_new_one(operator_client, upstream, target):
    response = post_target_change(operator_client, target, url=upstream.url, credential_value="Bearer mine")
    assert response.status_code == 302
    assert UpstreamTarget.objects.get().credential_value == "Bearer mine"


def test_admin_a_path_change_keeps_the_stored_credential(operator_client, target):
    assert post_target_change(operator_client, target, url="http://127.0.0.1:9/v2").status_code == 302
    assert UpstreamTarget.objects.get().credential_value == CREDENTIAL


@pytest.mark.parametrize("new_url", ["https://127.0.0.1:9/v1", "http://127.0.0.2:9/v1", "http://127.0.0.1:80/v1"])
def test_admin_scheme_host_or_port_each_count(operator_client, target, new_url):
    assert post_target_change(operator_client, target, url=new_url).status_code == 200
    assert UpstreamTarget.objects.get().url == HOME


@pytest.mark.parametrize("value", ["Bearer a\r\nX-Evil: 1", "Bearer a\nb", "Bearer a\x00b", " Bearer a"])
def test_admin_refuses_a_credential_the_client_could_not_send(operator_client, target, value):
    response = post_target_change(operator_client, target, credential_value=value)
    page = response.content.decode()
    assert response.status_code == 200 and ("control character" in page or "Null characters are not allowed" in page)
    assert UpstreamTarget.objects.get().credential_value == CREDENTIAL


def test_admin_refuses_a_header_name_that_is_not_a_token(operator_client, target):
    response = post_target_change(operator_client, target, credential_header="Authorization\r\nX-Evil")
    assert response.status_code == 200 and "A header name is" in response.content.decode()


# --- The management API ---------------------------------------------------------------------------


def patch_target(client, target, **changes):
    body = {"targets": [{"id": target.id, **changes}]}
    return client.patch(
        f"/api/routes/{target.route_id}/",
        json.dumps(body),
        content_type="application/json",
        **bearer(token_for("operator")),
    )


def test_api_repointing_a_target_refuses_to_carry_the_stored_credential(client, upstream, target):
    response = patch_target(client, target, url=upstream.url)
    assert response.status_code == 400
    fields = response.json()["error"]["fields"]
    assert "the stored credential is not sent there" in fields["targets"][0]["credential_value"][0]
    assert "TOPSECRET" not in response.content.decode()
    assert UpstreamTarget.objects.get().url == HOME

    assert patch_target(client, target, url=upstream.url, credential_header="").status_code == 200
    saved = UpstreamTarget.objects.get()
    assert (saved.url, saved.credential_value) == (upstream.url, "")
    assert received_credential(client, upstream, saved) is None


def test_api_repointing_with_the_credential_given_again(client, upstream, target):
    assert patch_target(client, target, url=upstream.url, credential_value="Bearer mine").status_code == 200
    assert received_credential(client, upstream, UpstreamTarget.objects.get()) == "Bearer mine"


@pytest.mark.parametrize("value", ["Bearer a\r\nX-Evil: 1", "Bearer a\x00b"])
def test_api_refuses_a_credential_the_client_could_not_send(client, target, value):
    response = patch_target(client, target, credential_value=value)
    assert response.status_code == 400
    assert "control character" in response.content.decode() or "Null characters" in response.content.decode()
    assert UpstreamTarget.objects.get().credential_value == CREDENTIAL


# --- The configuration file -----------------------------------------------------------------------


def apply_file(tmp_path, url: str) -> str:
    text = (
        "version: 1\nroutes:\n- name: chat\n  path_prefix: /v1\n  targets:\n"
        f"  - name: main\n    url: {url}\n    credential_header: Authorization\n"
        "    credential_value: ${ENV:GATEWAY_CREDENTIAL_CHAT_MAIN}\n"
    )
    path = tmp_path / "gateway.yaml"
    path.write_text(text)
    out = StringIO()
    call_command("apply_config", str(path), "--yes", stdout=out)
    return out.getvalue()


def test_config_file_repointing_a_target_needs_its_credential_again(tmp_path, monkeypatch, target):
    monkeypatch.delenv("GATEWAY_CREDENTIAL_CHAT_MAIN", raising=False)
    with pytest.raises(CommandError, match="the stored credential is not sent there") as raised:
        apply_file(tmp_path, "http://127.0.0.1:10/v1")
    assert "line 9" in str(raised.value) and "TOPSECRET" not in str(raised.value)
    assert UpstreamTarget.objects.get().url == HOME

    apply_file(tmp_path, "http://127.0.0.1:9/v2")  # same host and port: the stored credential stays
    assert UpstreamTarget.objects.get().credential_value == CREDENTIAL

    monkeypatch.setenv("GATEWAY_CREDENTIAL_CHAT_MAIN", "Bearer for-the-new-host")
    apply_file(tmp_path, "http://127.0.0.1:10/v1")
    assert UpstreamTarget.objects.get().credential_value == "Bearer for-the-new-host"


def test_config_file_refuses_a_credential_the_client_could_not_send(tmp_path, monkeypatch, target):
    monkeypatch.setenv("GATEWAY_CREDENTIAL_CHAT_MAIN", "Bearer a\r\nX-Evil: 1")
    with pytest.raises(CommandError, match="control character"):
        apply_file(tmp_path, HOME)
    assert UpstreamTarget.objects.get().credential_value == CREDENTIAL


# --- Call time and the log ------------------------------------------------------------------------


def test_a_stored_credential_the_client_cannot_send_is_a_502_and_never_logged(client, upstream, caplog):
    """A row saved before the check (or by hand) still cannot make a 500 that logs the credential."""
    route = make_route(name="legacy")
    UpstreamTarget.objects.bulk_create(  # bypasses every check, as an old row would have
        [
            UpstreamTarget(
                route=route,
                name="t",
                url=upstream.url,
                credential_header="Authorization",
                credential_value="Bearer sk-legacy-TOPSECRET\r\nX-Evil: 1",
            )
        ]  # fmt: skip
    )
    _, secret = make_key(routes=[route])
    with caplog.at_level(logging.DEBUG):
        response = client.post("/v1/chat", b"{}", content_type="application/json", **auth(secret))
    assert response.status_code == 502
    assert response.json()["error"]["type"] == "upstream_unavailable"
    assert not upstream.requests
    assert "TOPSECRET" not in caplog.text and "TOPSECRET" not in response.content.decode()
    assert "legacy" in caplog.text or "t " in caplog.text  # the failure is still logged, by target


def test_an_unreachable_upstream_is_logged_without_the_callers_query(client, caplog):
    route = make_route(name="down")
    make_target(route, "http://127.0.0.1:9/v1", name="gone")
    _, secret = make_key(routes=[route])
    with caplog.at_level(logging.INFO, logger="gateway.forwarding"):
        response = client.get("/v1/models?api_key=sk-in-the-query-TOPSECRET", **auth(secret))
    assert response.status_code == 502
    lines = [record.getMessage() for record in caplog.records if record.name == "gateway.forwarding"]
    assert lines and all("TOPSECRET" not in line for line in lines)
    assert any("gone" in line and "refused" in line.lower() for line in lines)
