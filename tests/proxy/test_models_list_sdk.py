"""`GET /v1/models` through the OpenAI Python SDK (`client.models.list()`), against the gateway's
live test server and real upstreams: the models the key may call, from its routes' model
conditions and their targets' aliases, merged with what a forwarding route's upstream reports."""

import openai
import pytest

from routes_admin.models import RequestLog
from tests.factories import make_key, make_route, make_target
from tests.upstream import json_reply, refused_url

pytestmark = pytest.mark.django_db(transaction=True)

UPSTREAM_LIST = {
    "object": "list",
    "data": [
        {"id": "upstream-a", "object": "model", "created": 1700000000, "owned_by": "lab"},
        {"id": "gpt-4o", "object": "model", "created": 1700000001, "owned_by": "lab"},
    ],
}


def sdk(live_server, secret):
    return openai.OpenAI(base_url=f"{live_server.url}/v1", api_key=secret, max_retries=0)


@pytest.fixture
def routes(upstream, servers):
    """chat (models gpt-4o, gpt-4o-mini), embed (a target alias `embed-small`), hidden (model
    secret-model, not allowed for the key), and a catch-all /v1 route forwarding to `upstream`."""
    chat = make_route(name="chat", path_prefix="/v1/chat", model_names="gpt-4o,gpt-4o-mini", priority=5)
    make_target(chat, servers().url)
    embed = make_route(name="embed", path_prefix="/v1/embeddings")
    make_target(embed, servers().url, model_aliases={"embed-small": "text-embedding-3-small"})
    hidden = make_route(name="hidden", path_prefix="/v1/secret", model_names="secret-model")
    make_target(hidden, servers().url)
    everything = make_route(name="everything", path_prefix="/v1")
    make_target(everything, upstream.url)
    return chat, embed, hidden, everything


def test_the_model_list_names_the_keys_models_merged_with_the_upstreams(live_server, upstream, routes):
    """Configured models of the key's routes first (owned_by: the route), then the forwarding
    upstream's own entries not already listed; a route the key may not call adds nothing."""
    chat, embed, _hidden, everything = routes
    upstream.reply = json_reply(UPSTREAM_LIST)
    _key, secret = make_key(routes=[chat, embed, everything])

    page = sdk(live_server, secret).models.list()
    listed = {model.id: model for model in page.data}
    assert sorted(list(listed)[:3]) == ["embed-small", "gpt-4o", "gpt-4o-mini"]  # routes in match order
    assert list(listed)[3:] == ["upstream-a"]  # the upstream's gpt-4o is listed once
    assert listed["gpt-4o"].owned_by == "chat" and listed["gpt-4o"].object == "model"
    assert listed["embed-small"].owned_by == "embed"
    assert listed["upstream-a"].owned_by == "lab" and listed["upstream-a"].created == 1700000000
    assert "secret-model" not in listed
    assert upstream.last.path == "/models" and "authorization" not in upstream.last.headers

    row = RequestLog.objects.latest("id")
    assert (row.status, row.route_name, row.path) == (200, "everything", "/v1/models")


def test_an_upstream_failure_leaves_the_configured_models(live_server, routes):
    """The forwarding route's upstream unreachable: the answer is still 200 with the configured
    models, and the log row says why the upstream's part is missing."""
    chat, _embed, _hidden, everything = routes
    everything.targets.update(url=refused_url())
    _key, secret = make_key(routes=[chat, everything])

    page = sdk(live_server, secret).models.list()
    assert [model.id for model in page.data] == ["gpt-4o", "gpt-4o-mini"]
    row = RequestLog.objects.latest("id")
    assert row.status == 200 and "upstream_unavailable" in row.detail["models_upstream"]


def test_without_a_forwarding_route_the_list_is_the_keys_configured_models(live_server, routes):
    """A key with only model-conditioned routes (no route covers /v1/models) still gets its list,
    where the call used to be a 404."""
    chat, _embed, _hidden, _everything = routes
    _key, secret = make_key(routes=[chat])
    page = sdk(live_server, secret).models.list()
    assert [model.id for model in page.data] == ["gpt-4o", "gpt-4o-mini"]
    row = RequestLog.objects.latest("id")
    assert row.status == 200 and row.key_prefix


def test_a_key_whose_routes_name_no_model_gets_the_upstreams_answer_as_before(live_server, upstream, routes):
    """Nothing of the gateway's own to add: the call is forwarded, the upstream's list is the answer."""
    _chat, _embed, _hidden, everything = routes
    upstream.reply = json_reply(UPSTREAM_LIST)
    _key, secret = make_key(routes=[everything])
    assert [model.id for model in sdk(live_server, secret).models.list().data] == ["upstream-a", "gpt-4o"]


def test_an_unknown_key_is_refused(live_server, routes):
    with pytest.raises(openai.AuthenticationError):
        sdk(live_server, "gw_nothing_wrong").models.list()
