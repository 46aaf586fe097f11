"""The two ways tests drive the gateway: in-process (Django's client) and as real servers."""

import pytest
import requests

from tests.factories import auth, make_key, make_route
from tests.upstream import json_reply


@pytest.mark.django_db
def test_call_is_forwarded_in_process(client, upstream):
    upstream.reply = json_reply({"answer": 42})
    route = make_route(upstream.url)
    _, secret = make_key(routes=[route])
    response = client.post("/v1/chat/completions", b'{"model": "m"}', content_type="application/json", **auth(secret))
    assert response.status_code == 200
    assert b"".join(response.streaming_content) == b'{"answer": 42}'
    assert upstream.last.path == "/chat/completions"


def test_call_is_forwarded_by_a_real_server(cluster, upstream):
    upstream.reply = json_reply({"answer": 42})
    secret = cluster.route_and_key(f"{upstream.url}/v1")
    gateway = cluster.start()
    response = requests.get(f"{gateway.url}/v1/models", headers={"Authorization": f"Bearer {secret}"}, timeout=5)
    assert response.json() == {"answer": 42}
    assert upstream.last.path == "/v1/models"
