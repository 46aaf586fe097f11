"""A password written into a target URL shows nowhere, and such a URL is refused."""

import logging

import pytest
from django.core.exceptions import ValidationError

from routes_admin.models import RequestLog, UpstreamTarget
from tests.factories import auth, make_key, make_route, make_target
from tests.servers import free_port

pytestmark = pytest.mark.django_db

PASSWORD = "s3cr3t-in-url"


class Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines = []

    def emit(self, record):
        self.lines.append(self.format(record))


@pytest.fixture
def logged(fresh_runtime):
    """Every line the gateway logs during the test, the access log included (no SSRF verdict cached)."""
    handler = Collect()
    loggers = [logging.getLogger(), logging.getLogger("gateway.access")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
    yield handler.lines
    for logger, level in zip(loggers, levels, strict=True):
        logger.removeHandler(handler)
        logger.setLevel(level)


def test_a_url_with_a_user_or_password_cannot_be_saved_through_validation():
    route = make_route()
    for url in (f"http://user:{PASSWORD}@10.0.0.5:8000/v1", "http://token@10.0.0.5/v1"):
        target = UpstreamTarget(route=route, url=url, name="t")
        with pytest.raises(ValidationError) as raised:
            target.full_clean()
        assert "credential header" in str(raised.value)


def test_the_default_name_is_the_host_and_port_never_the_user_or_password():
    route = make_route()
    target = make_target(route, f"http://user:{PASSWORD}@10.0.0.5:8000/v1")  # a shell skips clean()
    assert target.name == "10.0.0.5:8000"
    assert make_target(route, "https://[2001:db8::5]/v1").name == "[2001:db8::5]"


def test_a_password_in_a_target_url_reaches_no_answer_metric_log_or_row(client, admin_client, logged):
    route = make_route(name="leaky")
    make_target(route, f"http://user:{PASSWORD}@127.0.0.1:{free_port()}/v1")  # nothing listens there
    _, secret = make_key(routes=[route])

    answer = client.post("/v1/chat/completions", b"{}", content_type="application/json", **auth(secret))
    metrics = client.get("/metrics").content.decode()
    pages = [
        admin_client.get(path).content.decode()
        for path in ("/admin/routes_admin/route/", "/admin/routes_admin/requestlog/", "/admin/")
    ]

    assert answer.status_code == 502
    assert answer.json()["error"]["type"] == "upstream_unavailable"
    row = RequestLog.objects.get()
    shown = [answer.content.decode(), metrics, *pages, *logged, repr(row.__dict__)]
    assert logged, "the call logged nothing at all"
    for text in shown:
        assert PASSWORD not in text


def test_the_admin_refuses_a_url_with_a_password(admin_client):
    response = admin_client.post(
        "/admin/routes_admin/route/add/",
        {
            "name": "with-password",
            "path_prefix": "/v9",
            "methods": "GET,POST",
            "priority": "0",
            "strategy": "weighted",
            "connect_timeout": "5",
            "read_timeout": "300",
            "max_body_bytes": "1000",
            "max_attempts": "3",
            "retry_statuses": "429",
            "match_headers": "{}",
            "match_body": "{}",
            "enabled": "on",
            "targets-TOTAL_FORMS": "1",
            "targets-INITIAL_FORMS": "0",
            "targets-0-url": f"http://user:{PASSWORD}@10.0.0.5:8000/v1",
            "targets-0-weight": "1",
            "targets-0-position": "0",
            "targets-0-enabled": "on",
            "targets-0-model_aliases": "{}",
        },
    )
    assert response.status_code == 200  # the form again, with the error
    assert "credential header" in response.content.decode()
    assert not UpstreamTarget.objects.exists()
