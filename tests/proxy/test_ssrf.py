"""SSRF guard: where the gateway may send calls, checked when a target is saved and when it is called."""

import json

import pytest
from django.core.exceptions import ValidationError
from django.test import override_settings

from routes_admin import validators
from routes_admin.models import RequestLog, UpstreamTarget
from tests.factories import auth, make_key, make_route, make_target
from tests.upstream import json_reply


@pytest.fixture(autouse=True)
def fresh_verdicts(fresh_runtime):
    """Verdicts are cached per process (in its runtime); each test sets its own settings."""
    return fresh_runtime.ssrf


@pytest.mark.parametrize(
    "url",
    [
        "ftp://10.0.0.5/models",
        "file:///etc/passwd",
        "gopher://127.0.0.1:6379/_FLUSHALL",
        "http://169.254.169.254/latest/meta-data/",
        "http://169.254.170.2/v2/credentials",  # ECS task credentials
        "http://[fd00:ec2::254]/latest/meta-data/",
        "http://[::ffff:169.254.169.254]/",
        "http://[fe80::1]:8080/",
        "http://2852039166/",  # 169.254.169.254 written as one number
        "http:///no-host",
        # The other clouds' metadata services...
        "http://100.100.100.200/latest/meta-data/",  # Alibaba
        "http://192.0.0.192/opc/v2/instance/",  # Oracle
        "http://168.63.129.16/machine?comp=goalstate",  # Azure wire server
        "http://metadata.google.internal/computeMetadata/v1/",  # GCP, by name
        "http://[fd20:ce::254]/computeMetadata/v1/",  # GCP over IPv6
        "http://169.254.0.23/",  # Tencent
        # ...169.254.169.254 in the IPv6 forms that carry an IPv4 address...
        "http://[::ffff:a9fe:a9fe]/",  # IPv4-mapped, hex
        "http://[::169.254.169.254]/",  # IPv4-compatible
        "http://[2002:a9fe:a9fe::1]/",  # 6to4
        "http://[64:ff9b::169.254.169.254]/",  # NAT64, well-known prefix
        "http://[64:ff9b:1:a9fe:a9:fe00::]/",  # NAT64, local-use prefix of 48 bits
        "http://[64:ff9b:1::a9fe:a9fe]/",  # NAT64, local-use prefix of 96 bits
        "http://[2001:0:4136:e378:8000:63bf:5601:5601]/",  # Teredo
        # ...and in the spellings the resolver also reads as 169.254.169.254
        "http://0251.0376.0251.0376/",
        "http://0xa9.0xfe.0xa9.0xfe/",
        "http://0xa9fea9fe/",
        "http://169.254.43518/",
        # and credentials in the URL
        "http://user:password@10.0.0.5:8000/v1",
        "http://10.0.0.5:port/v1",
    ],
)
def test_unsafe_target_urls_are_refused(url):
    with pytest.raises(ValidationError):
        validators.check_target_url(url)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000/v1",
        "https://api.openai.com/v1",
        "http://10.0.0.5:8000",
        "http://[64:ff9b::10.0.0.5]:8000/v1",  # NAT64 of an ordinary address
        "http://[2001:db8::5]/v1",
    ],
)
def test_ordinary_upstreams_are_allowed(url):
    validators.check_target_url(url)


@override_settings(GATEWAY_ALLOW_LINK_LOCAL=True)
def test_link_local_addresses_are_allowed_only_when_the_setting_says_so():
    validators.check_target_url("http://169.254.10.20:8000/v1")
    with pytest.raises(ValidationError):
        validators.check_target_url("ftp://169.254.10.20/")  # the scheme rule still holds


@override_settings(GATEWAY_UPSTREAM_HOSTS=["10.0.0.5", ".models.internal"])
def test_host_allow_list_with_exact_hosts_and_domain_suffixes():
    validators.check_target_url("http://10.0.0.5:8000/v1")
    validators.check_target_url("http://llama.models.internal/v1")
    validators.check_target_url("http://MODELS.internal/v1")
    for url in ("http://10.0.0.6/v1", "http://evilmodels.internal/v1", "http://models.internal.evil.com/"):
        with pytest.raises(ValidationError):
            validators.check_target_url(url)


@pytest.mark.django_db
def test_the_admin_form_refuses_a_metadata_target():
    route = make_route()
    target = UpstreamTarget(route=route, url="http://169.254.169.254/latest", name="metadata")

    with pytest.raises(ValidationError) as raised:
        target.full_clean()

    assert "link-local" in str(raised.value)


@pytest.mark.django_db
def test_a_target_saved_without_validation_is_still_not_called(client, upstream):
    route = make_route()
    make_target(route, upstream.url, name="outside-allow-list")  # e.g. created in a shell, no clean()
    _, secret = make_key(routes=[route])

    with override_settings(GATEWAY_UPSTREAM_HOSTS=["models.internal"]):
        response = client.post(
            "/v1/chat/completions", b'{"model": "m"}', content_type="application/json", **auth(secret)
        )

    assert response.status_code == 502
    assert response.json()["error"]["type"] == "upstream_unavailable"
    assert upstream.requests == []
    assert RequestLog.objects.get().status == 502


@pytest.mark.django_db
def test_redirects_from_an_upstream_are_returned_never_followed(client, servers):
    elsewhere = servers(json_reply({"secret": "internal"}))
    redirecting = servers(json_reply({}, status=302, headers={"Location": elsewhere.url + "/admin"}))
    route = make_route(redirecting.url)
    _, secret = make_key(routes=[route])

    response = client.get("/v1/models", **auth(secret))
    body = b"".join(response.streaming_content)

    assert response.status_code == 302
    assert response["Location"] == elsewhere.url + "/admin"
    assert json.loads(body) == {}
    assert elsewhere.requests == []
