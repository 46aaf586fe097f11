"""The service layer (routes_admin/services): the one write path for routes, targets, keys and plans.

Its rules hold whoever calls it, its refusals are one ServiceError with field messages, and its
writes are recorded in the change history and announced to the gateway processes after commit.
"""

from datetime import timedelta
from io import StringIO

import pytest
from auditlog.models import LogEntry
from django.core.management import call_command
from django.utils import timezone

from routes_admin.models import APIKey, ConfigGeneration, UpstreamTarget
from routes_admin.services import ServiceError, plans
from routes_admin.services import keys as key_service
from routes_admin.services import routes as route_service

pytestmark = pytest.mark.django_db

ROUTE = {"name": "chat", "path_prefix": "/v1"}


def test_an_unnamed_target_is_named_after_its_host_and_port():
    saved = route_service.save_route(None, ROUTE, [{"url": "http://127.0.0.1:9/v1"}, {"url": "http://10.0.0.5/v1"}])
    assert [t.name for t in saved.targets] == ["127.0.0.1:9", "10.0.0.5"]


def test_refusals_are_field_messages_by_target_position_and_nothing_is_saved():
    targets = [{"name": "a", "url": "http://127.0.0.1:9/"}, {"name": "a", "url": "http://127.0.0.1:8/"}]
    targets.append({"name": "b", "url": "ftp://127.0.0.1/"})
    with pytest.raises(ServiceError) as raised:
        route_service.save_route(None, {**ROUTE, "path_prefix": "/admin"}, targets)
    assert "path_prefix" in raised.value.errors
    assert not UpstreamTarget.objects.exists()

    route = route_service.save_route(None, ROUTE).route
    with pytest.raises(ServiceError) as raised:
        route_service.save_route(route, {}, targets)
    first, second, third = raised.value.errors["targets"]
    assert first == {} and "named 'a'" in second["name"][0] and "url" in third
    assert "targets[2].url: Targets are http:// or https:// URLs." in raised.value.messages()


def test_a_credential_follows_its_host():
    secret = "Bearer sk-0123456789"
    route = route_service.save_route(None, ROUTE).route
    target = route_service.save_target(
        route, None, {"url": "http://127.0.0.1:9/v1", "credential_header": "Authorization", "credential_value": secret}
    )
    assert route_service.save_target(route, target, {"url": "http://127.0.0.1:9/v2"}).credential_value == secret
    with pytest.raises(ServiceError) as raised:
        route_service.save_target(route, target, {"url": "http://127.0.0.1:10/v2"})
    assert list(raised.value.errors) == ["credential_value"] and secret not in str(raised.value)
    moved = route_service.save_target(route, target, {"url": "http://127.0.0.1:10/v2", "credential_header": ""})
    assert (moved.credential_header, moved.credential_value) == ("", "")


def test_a_key_names_its_routes_and_is_not_issued_expired():
    with pytest.raises(ServiceError) as raised:
        key_service.issue_key({"name": "nowhere"})
    assert list(raised.value.errors) == ["routes"]
    with pytest.raises(ServiceError) as raised:
        key_service.issue_key({"name": "late", "all_routes": True, "expires": timezone.now() - timedelta(days=1)})
    assert list(raised.value.errors) == ["expires"]
    assert not APIKey.objects.exists()

    key, secret = key_service.issue_key({"name": "k", "all_routes": True})
    assert APIKey.objects.for_secret(secret) == key
    with pytest.raises(ServiceError):
        key_service.update_key(key, {"all_routes": False})  # and no routes: refused
    with pytest.raises(ServiceError):
        key_service.rotate_key(key, key_service.MAX_GRACE + timedelta(seconds=1))
    assert APIKey.objects.for_secret(secret) == key  # the refused rotation changed nothing


def test_writes_are_recorded_and_announced_after_commit(django_capture_on_commit_callbacks):
    before = ConfigGeneration.objects.current()
    with django_capture_on_commit_callbacks(execute=True):
        route = route_service.save_route(None, ROUTE, [{"name": "t", "url": "http://127.0.0.1:9/"}]).route
        plan = plans.save_plan(None, {"name": "basic", "requests_per_minute": 10})
        key, _ = key_service.issue_key({"name": "k", "quota_plan": plan}, [route])
        key_service.revoke_key(key)
    assert ConfigGeneration.objects.current() > before
    recorded = set(LogEntry.objects.values_list("content_type__model", "action"))
    assert {("route", 0), ("upstreamtarget", 0), ("quotaplan", 0), ("apikey", 0), ("apikey", 1)} <= recorded


def test_setup_demo_goes_through_the_service_layer_and_follows_a_moved_demo_component(tmp_path, monkeypatch, settings):
    from routes_admin.management.commands import setup_demo

    settings.BASE_DIR = tmp_path
    monkeypatch.setattr(setup_demo, "CREDENTIALS", tmp_path / ".run" / "demo-credentials")
    call_command("setup_demo", "--upstream", "http://127.0.0.1:9000/v1", stdout=StringIO())
    call_command("setup_demo", "--upstream", "http://127.0.0.1:9001/v1", stdout=StringIO())
    target = UpstreamTarget.objects.get(name="demo-component")
    assert target.url == "http://127.0.0.1:9001/v1"
    assert APIKey.objects.get(name="demo").routes.get().name == "demo"
