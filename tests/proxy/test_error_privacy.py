"""Gateway errors tell callers which route failed, never the internal address of its target."""

import logging

import pytest

from routes_admin.models import RequestLog
from tests.factories import auth, make_key, make_route
from tests.upstream import refused_url

pytestmark = pytest.mark.django_db


def call_unreachable_route(client):
    address = refused_url()  # a default target name is this host:port
    route = make_route(address, name="chat")
    _, secret = make_key(routes=[route])
    response = client.post("/v1/chat/completions", b"{}", content_type="application/json", **auth(secret))
    return address.removeprefix("http://"), response


def test_a_502_names_the_route_not_the_target_address(client):
    address, response = call_unreachable_route(client)
    assert response.status_code == 502
    message = response.json()["error"]["message"]
    assert message == "The upstream of the route chat could not be reached."
    assert address not in response.content.decode()
    # Operators still see where the call went.
    assert RequestLog.objects.get().target == address


def test_exposing_targets_names_the_target_too(client, settings):
    settings.GATEWAY_EXPOSE_TARGET = True
    address, response = call_unreachable_route(client)
    assert (
        response.json()["error"]["message"]
        == f"The upstream of the route chat (target {address}) could not be reached."
    )


class Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records = []

    def emit(self, record):
        self.records.append(record)


def test_an_upstream_failure_is_a_warning_not_a_django_error(client):
    """A 502 is the gateway doing its job: operators' error alerts must not fire for each one."""
    collected = Collect()
    loggers = [logging.getLogger("django.request"), logging.getLogger("gateway.errors")]
    for logger in loggers:
        logger.addHandler(collected)
    try:
        _, response = call_unreachable_route(client)
    finally:
        for logger in loggers:
            logger.removeHandler(collected)
    assert response.status_code == 502
    assert [(r.name, r.levelname) for r in collected.records] == [("gateway.errors", "WARNING")]
    assert collected.records[0].exc_info is None
