"""`manage.py issue_key`, the command an operator scripts."""

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from routes_admin.models import APIKey
from tests.factories import make_route
from tests.upstream import json_reply

pytestmark = pytest.mark.django_db


def issue(*args) -> list[str]:
    out = StringIO()
    call_command("issue_key", *args, stdout=out)
    return out.getvalue().strip().splitlines()


def works(client, secret: str, path: str = "/v1/models") -> int:
    response = client.get(path, HTTP_AUTHORIZATION=f"Bearer {secret}")
    if response.streaming:
        b"".join(response.streaming_content)
    return response.status_code


def test_the_key_is_alone_on_the_last_line_and_works(client, upstream):
    upstream.reply = json_reply({"data": []})
    route = make_route(upstream.url, name="chat")
    lines = issue("--name", "ci-bot", "--route", "chat")
    secret = lines[-1]
    assert secret.startswith("gw_") and " " not in secret
    assert all(secret not in line for line in lines[:-1])  # shown once, on that line only
    assert works(client, secret) == 200
    key = APIKey.objects.get(name="ci-bot")
    assert list(key.routes.all()) == [route] and not key.all_routes
    assert key.expires is None


def test_a_key_for_one_route_is_refused_on_another(client, upstream):
    make_route(upstream.url, name="a", path_prefix="/a")
    make_route(upstream.url, name="b", path_prefix="/b")
    secret = issue("--name", "only-a", "--route", "a")[-1]
    assert works(client, secret, "/a/x") == 200
    assert works(client, secret, "/b/x") == 403


def test_route_may_be_repeated(client, upstream):
    make_route(upstream.url, name="a", path_prefix="/a")
    make_route(upstream.url, name="b", path_prefix="/b")
    secret = issue("--name", "both", "--route", "a", "--route", "b")[-1]
    assert (works(client, secret, "/a/x"), works(client, secret, "/b/x")) == (200, 200)


def test_all_routes(client, upstream):
    secret = issue("--name", "everything", "--all-routes")[-1]
    make_route(upstream.url, name="made-later")
    assert works(client, secret) == 200
    assert APIKey.objects.get(name="everything").all_routes


def test_it_refuses_without_route_or_all_routes():
    with pytest.raises(CommandError, match="--route"):
        issue("--name", "nowhere")
    assert not APIKey.objects.exists()


def test_route_and_all_routes_together_are_refused():
    make_route(name="a")
    with pytest.raises(CommandError):
        issue("--name", "confused", "--route", "a", "--all-routes")
    assert not APIKey.objects.exists()


def test_an_unknown_route_is_refused_and_nothing_is_issued():
    make_route(name="real")
    with pytest.raises(CommandError, match="no-such-route"):
        issue("--name", "typo", "--route", "real", "--route", "no-such-route")
    assert not APIKey.objects.exists()


def test_expires_days(client, upstream):
    make_route(upstream.url, name="chat")
    before = timezone.now()
    lines = issue("--name", "temp", "--route", "chat", "--expires-days", "7")
    key = APIKey.objects.get(name="temp")
    assert before + timedelta(days=7) <= key.expires <= timezone.now() + timedelta(days=7)
    assert any("expires" in line for line in lines[:-1])
    assert works(client, lines[-1]) == 200
    key.expires = timezone.now() - timedelta(seconds=1)
    key.save()
    assert works(client, lines[-1]) == 401


@pytest.mark.parametrize("days", ["0", "-3"])
def test_expires_days_must_be_positive(days):
    make_route(name="chat")
    with pytest.raises(CommandError):
        issue("--name", "bad", "--route", "chat", "--expires-days", days)
    assert not APIKey.objects.exists()


@pytest.mark.slow  # manage.py in processes of its own, on a database of its own
def test_as_a_real_command_line(tmp_path):
    """What a shell script sees: exit status, and the key on the last line of stdout."""
    from tests.servers import GatewayCluster

    cluster = GatewayCluster(tmp_path)
    try:
        cluster.shell("from routes_admin.models import Route\nRoute.objects.create(name='chat', path_prefix='/v1')")
        out = cluster.manage("issue_key", "--name", "script", "--route", "chat")
        secret = out.rstrip("\n").splitlines()[-1]
        assert secret.startswith("gw_")
        check = cluster.shell(
            f"from routes_admin.models import APIKey\nprint(APIKey.objects.for_secret({secret!r}).name)"
        )
        assert check.strip() == "script"
        with pytest.raises(RuntimeError, match="--route"):
            cluster.manage("issue_key", "--name", "nowhere")
    finally:
        cluster.close()
