"""Route configuration that is saved but cannot work as meant is flagged wherever routes are edited:
an enabled route with no enabled target, and enabled routes that shadow each other (same prefix,
priority and conditions). One function computes the warnings (services/routes.py); the admin's
change page, the API's `warnings` and apply_config show them."""

import json
from io import StringIO

import pytest
import yaml
from django.core.management import call_command

from routes_admin.services import routes as route_service
from tests.admin_forms import form_values
from tests.factories import auth, make_key, make_route, make_target, make_user
from tests.upstream import json_reply

pytestmark = pytest.mark.django_db

UPSTREAM = "http://127.0.0.1:9/v1"  # nothing is called: only saved


def warnings_of(route) -> list[str]:
    return route_service.route_warnings(route)


# The service layer's one function.


def test_an_enabled_route_without_an_enabled_target_is_flagged():
    bare = make_route(name="bare")
    all_off = make_route(name="all-off", path_prefix="/v2")
    make_target(all_off, UPSTREAM, enabled=False)
    working = make_route(UPSTREAM, name="working", path_prefix="/v3")
    assert warnings_of(bare) == [route_service.NO_USABLE_TARGET]
    assert warnings_of(all_off) == [route_service.NO_USABLE_TARGET]
    assert warnings_of(working) == []
    bare.enabled = False
    bare.save()
    assert warnings_of(bare) == []  # a disabled route serves nothing: nothing to warn about


def test_routes_with_the_same_prefix_priority_and_conditions_are_both_flagged():
    first = make_route(UPSTREAM, name="a-chat", path_prefix="/v1/", methods="GET,POST", match_headers={"X-T": "1"})
    second = make_route(UPSTREAM, name="b-chat", path_prefix="/v1", methods="post, get", match_headers={"x-t": "1"})
    (taker,) = warnings_of(first)
    (shadowed,) = warnings_of(second)
    assert "as b-chat" in taker and "takes all of their calls" in taker
    assert "as a-chat" in shadowed and "never serves a call" in shadowed


@pytest.mark.parametrize(
    "difference",
    [
        {"priority": 1},
        {"path_prefix": "/v2"},
        {"methods": "POST"},
        {"model_names": "gpt-4o"},
        {"match_headers": {"X-Tenant": "acme"}},
        {"match_body": {"stream": True}},
        {"enabled": False},
    ],
)
def test_routes_differing_in_one_condition_are_not_flagged(difference):
    first = make_route(UPSTREAM, name="a-chat")
    second = make_route(UPSTREAM, name="b-chat", **difference)
    assert warnings_of(first) == [] and warnings_of(second) == []


def test_the_shadowed_route_indeed_never_serves(client, upstream, servers):
    """What the warning says is what the proxy does: the name breaks the tie."""
    other = servers(json_reply({"from": "b"}))
    upstream.reply = json_reply({"from": "a"})
    first = make_route(upstream.url, name="a-chat")
    second = make_route(other.url, name="b-chat")
    assert "never serves" in warnings_of(second)[0]
    _, secret = make_key(routes=[first, second])
    for _ in range(3):
        answer = client.post("/v1/chat/completions", b"{}", content_type="application/json", **auth(secret))
        assert json.loads(b"".join(answer.streaming_content) if answer.streaming else answer.content) == {"from": "a"}


# The surfaces show them.


@pytest.fixture
def operator(client):
    client.force_login(make_user("ops", role="Operator"))
    return client


def test_the_admin_warns_when_a_route_is_saved_without_a_target_and_on_its_change_page(operator):
    page = operator.get("/admin/routes_admin/route/add/").content.decode()
    data = form_values(page, "route_form")
    data.update(name="bare", path_prefix="/v1", methods="GET,POST", _continue="1")
    saved = operator.post("/admin/routes_admin/route/add/", data, follow=True)
    html = saved.content.decode()
    assert saved.status_code == 200 and "has no enabled target" in html
    assert html.count("has no enabled target") == 1  # "Save and continue": shown once, not twice
    route = saved.context["original"]
    assert "has no enabled target" in operator.get(f"/admin/routes_admin/route/{route.pk}/change/").content.decode()

    make_target(route, UPSTREAM)
    assert "has no enabled target" not in operator.get(f"/admin/routes_admin/route/{route.pk}/change/").content.decode()


def test_the_admin_flags_a_route_shadowed_by_another_where_it_is_edited(operator):
    make_route(UPSTREAM, name="a-chat")
    shadowed = make_route(UPSTREAM, name="b-chat")
    html = operator.get(f"/admin/routes_admin/route/{shadowed.pk}/change/").content.decode()
    assert "Same prefix, priority and conditions as a-chat" in html and 'class="warning"' in html


def test_the_api_answers_the_warnings_with_the_route(operator):
    created = operator.post(
        "/api/routes/", json.dumps({"name": "bare", "path_prefix": "/v1"}), content_type="application/json"
    )
    assert created.status_code == 201, created.content
    assert created.json()["warnings"] == [route_service.NO_USABLE_TARGET]

    targets = {"targets": [{"url": UPSTREAM}]}
    changed = operator.patch(
        f"/api/routes/{created.json()['id']}/", json.dumps(targets), content_type="application/json"
    )
    assert changed.status_code == 200 and changed.json()["warnings"] == []

    twin = operator.post(
        "/api/routes/",
        json.dumps({"name": "a-twin", "path_prefix": "/v1", **targets}),
        content_type="application/json",
    )
    assert "never serves" not in " ".join(twin.json()["warnings"])  # a-twin sorts first: it takes the calls
    listed = {route["name"]: route["warnings"] for route in operator.get("/api/routes/").json()["results"]}
    assert "Same prefix, priority and conditions as bare" in listed["a-twin"][0]
    assert "never serves a call" in listed["bare"][0]


def test_apply_config_prints_the_warnings_before_and_after_applying(tmp_path):
    document = {
        "version": 1,
        "routes": [
            {"name": "bare", "path_prefix": "/v1", "targets": []},
            {"name": "off", "path_prefix": "/v2", "targets": [{"url": UPSTREAM, "enabled": False}]},
            {"name": "fine", "path_prefix": "/v3", "targets": [{"url": UPSTREAM}]},
        ],
    }
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(document))

    def run(*args) -> str:
        out = StringIO()
        call_command("apply_config", str(path), *args, stdout=out)
        return out.getvalue()

    for output in (run(), run("--yes"), run()):
        warned = [line for line in output.splitlines() if line.startswith("warning:")]
        assert warned == [
            f"warning: route bare: {route_service.NO_USABLE_TARGET}",
            f"warning: route off: {route_service.NO_USABLE_TARGET}",
        ], output
