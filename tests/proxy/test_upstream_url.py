"""The path never chooses the upstream.

The upstream URL is built from the target's parts, so its scheme, host, port and base path are
the target's whatever the path; paths that could leave the base path (dot-segments in any
encoding, backslashes, control characters) or hide the prefix behind escapes are refused with 400.
"""

import http.client
import posixpath
from urllib.parse import unquote, urlsplit

import pytest
import requests
import urllib3
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from proxy.config import RouteInfo, TargetInfo
from proxy.errors import InvalidRequest
from proxy.forwarding import Outgoing, check_path, upstream_url
from routes_admin.models import RequestLog
from tests.examples import examples
from tests.factories import auth, make_key, make_route, make_target
from tests.upstream import UpstreamServer

# Pieces the paths are made of: plain text, every spelling of "/", "." and "\", userinfo and
# host lookalikes, query and fragment starters, control characters, non-ASCII.
PIECES = [
    "a", "models", ".", "..", "%2e", "%2E", "%2e%2e", ".%2e", "%252e%252e", "%2f", "%2F", "%252F",
    "/", "//", "\\", "%5c", "%5C", "@", "%40", ":", "127.0.0.1:1", "evil.example:8080", "user:pw@",
    "?", "%3F", "#", "%23", "%25", "%", ";", "..;", "~", " ", "%20", "%00", "%0d%0a", "%7f", "é", "%C3%A9",
]  # fmt: skip
# Half the pieces are plain, so that many paths are sent and not only refused; paths start the way
# a path matching the route's prefix does.
pieces = st.one_of(st.sampled_from(["a", "models", "/", "/v"]), st.sampled_from(PIECES))
paths = st.tuples(st.sampled_from(["", "/", "/", "/", "%2F", "%2f"]), st.lists(pieces, max_size=12)).map(
    lambda parts: parts[0] + "".join(parts[1])
)

TARGET = "https://models.internal:8443/base/v2"


def route(prefix: str = "/p") -> RouteInfo:
    target = TargetInfo(
        id=1, name="t", url=TARGET, weight=1, position=0, credential_header="", credential_value="", model_aliases={}
    )
    return RouteInfo(
        id=1, name="r", prefix=prefix, methods=frozenset(), models=frozenset(), match_headers={}, match_body={},
        priority=0, strategy="weighted", connect_timeout=1, read_timeout=1, max_body_bytes=1, max_attempts=1,
        retry_statuses=frozenset(), retry_non_idempotent=False, fallback_id=None, limits={}, targets=(target,),
    )  # fmt: skip


def outgoing(raw: str, query: str = "") -> Outgoing:
    """The call as gunicorn hands it over: the raw path as sent (RAW_URI), the path decoded."""
    return Outgoing(
        method="GET", path=unquote(raw), raw_path=raw, query=query, body=b"", document=None, headers={},
        scheme="http", host="gw", request_id="r", client_ip="127.0.0.1",
    )  # fmt: skip


def requested(url: str) -> tuple:
    """What the pooled client will actually do with the URL: urllib3 picks the connection from its
    parse (the pool key), and sends requests' path_url on it."""
    parsed = urllib3.util.parse_url(url)
    prepared = requests.PreparedRequest()
    prepared.prepare_url(url, None)
    return parsed.scheme, parsed.host, parsed.port, urllib3.util.parse_url(prepared.path_url).path or "/"


@settings(max_examples=examples(600), deadline=None)
@given(after_prefix=paths, query=st.sampled_from(["", "a=1", "x=%2F..%2F"]))
def test_any_path_keeps_the_targets_scheme_host_port_and_base_path(after_prefix, query):
    call = outgoing("/p" + after_prefix, query)
    r = route()
    if unquote("/p" + after_prefix).split("/")[:2] != ["", "p"]:
        return  # no route with prefix /p would match this path
    try:
        check_path(r.prefix, call)
    except InvalidRequest:
        event("refused")
        return  # refused with 400 before any upstream is contacted
    event("sent")
    url = upstream_url(r, r.targets[0], call)
    scheme, host, port, path = requested(url)
    assert (scheme, host, port) == ("https", "models.internal", 8443), url
    assert urlsplit(url).netloc == "models.internal:8443"  # the standard library's reading agrees
    assert path == "/base/v2" or path.startswith("/base/v2/"), url
    # Decoded and resolved as a file server would, it still stays under the base path.
    resolved = posixpath.normpath(unquote(unquote(path)))
    assert resolved == "/base/v2" or resolved.startswith("/base/v2/"), url


@pytest.mark.parametrize(
    "raw",
    [
        "/p/../x",
        "/p/a/./b",
        "/p/%2e%2e/x",
        "/p/.%2E/x",
        "/p/a%2F..%2F..%2Fx",
        "/p/%252e%252e/x",
        "/p/..;/x",
        "/p/..\\x",
        "/p/a%5C..%5Cx",
        "/p/a%00b",
        "/p/a%0d%0aX-Injected:%201",
        "/p%2F@evil.example:8080/x",
        "/p%2F..%2Fx",
    ],
)
def test_unsafe_paths_are_refused(raw):
    with pytest.raises(InvalidRequest):
        check_path("/p", outgoing(raw))


@pytest.mark.parametrize(
    "raw, sent",
    [
        ("/p", "/base/v2"),
        ("/p/", "/base/v2/"),
        ("/p/chat/completions", "/base/v2/chat/completions"),
        ("/p/models/org%2Fmodel%3Fv%20x/info", "/base/v2/models/org%2Fmodel%3Fv%20x/info"),
        ("/p/@evil.example:8080/x", "/base/v2/@evil.example:8080/x"),
        ("/p/a..b/.hidden/...", "/base/v2/a..b/.hidden/..."),
        ("/p/100%/x#frag", "/base/v2/100%25/x%23frag"),
    ],
)
def test_ordinary_paths_are_sent_below_the_base_path(raw, sent):
    check_path("/p", outgoing(raw))
    assert upstream_url(route(), route().targets[0], outgoing(raw)) == "https://models.internal:8443" + sent


ATTACKS = [
    "/v1%2F@127.0.0.1:{other}/x",
    "/v1%2f@127.0.0.1:{other}/x",
    "/v1/../x",
    "/v1/%2e%2e/x",
    "/v1/a%2F..%2F..%2Fx",
    "/v1/..%5Cx",
    "/v1/..;/x",
    "/v1/a%00b",
]


@pytest.fixture
def other():
    """A second upstream that no call may reach."""
    server = UpstreamServer()
    yield server
    server.stop()


@pytest.mark.django_db
def test_attack_paths_are_refused_and_logged_and_reach_no_upstream(client, upstream, other):
    route_row = make_route(name="r", path_prefix="/v1")
    make_target(route_row, f"{upstream.url}/base")
    _, secret = make_key(routes=[route_row])

    for attack in ATTACKS:
        raw = attack.format(other=other.port)
        response = client.get(raw, RAW_URI=raw, **auth(secret))  # RAW_URI as gunicorn sets it
        assert response.status_code == 400, raw
        assert response.json()["error"]["type"] == "invalid_request_error"
        assert response.json()["error"]["request_id"] == response["X-Request-ID"]

    assert upstream.requests == [] and other.requests == []
    rows = RequestLog.objects.order_by("id")
    assert [(row.status, row.error_type) for row in rows] == [(400, "invalid_request_error")] * len(ATTACKS)


@pytest.fixture
def secret_for_v1(upstream):
    route_row = make_route(name="r", path_prefix="/v1")
    make_target(route_row, f"{upstream.url}/base")
    return make_key(routes=[route_row])[1]


# Closing an answer fires request_finished, which closes the database connection: no test transaction.
@pytest.mark.django_db(transaction=True)
@settings(max_examples=examples(150), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(after_prefix=paths)
def test_through_the_gateway_any_path_reaches_only_the_target_below_its_base(
    client, upstream, other, secret_for_v1, after_prefix
):
    # The Django test client would read "?" and "#" itself: they go in escaped, as a client sends them.
    raw = "/v1" + after_prefix.replace("127.0.0.1:1", f"127.0.0.1:{other.port}").replace("?", "%3F").replace("#", "%23")
    before, rows = len(upstream.requests), RequestLog.objects.count()

    response = client.get(raw, RAW_URI=raw, **auth(secret_for_v1))
    if response.streaming:
        b"".join(response.streaming_content)
        response.close()  # the call ends (and is recorded) when its answer is done

    event(f"status {response.status_code}")
    assert other.requests == []
    assert RequestLog.objects.count() == rows + 1  # every call, refused or not, has its row
    assert response.status_code in (200, 400, 404), raw
    if response.status_code == 200:
        path = upstream.requests[before].path
        assert path == "/base" or path.startswith("/base/"), raw
        resolved = posixpath.normpath(unquote(unquote(path)))
        assert resolved == "/base" or resolved.startswith("/base/"), raw
    else:
        assert response.json()["error"]["type"] in ("invalid_request_error", "not_found"), raw
        assert len(upstream.requests) == before


def test_through_a_real_server_attack_paths_are_refused_and_reach_no_upstream(cluster, upstream, other):
    """gunicorn passes the raw path (RAW_URI); http.client sends each path exactly as written."""
    secret = cluster.route_and_key(f"{upstream.url}/base")
    gateway = cluster.start()
    host, port = urlsplit(gateway.url).hostname, urlsplit(gateway.url).port
    for attack in ATTACKS:
        raw = attack.format(other=other.port)
        connection = http.client.HTTPConnection(host, port, timeout=10)
        connection.request("GET", raw, headers={"Authorization": f"Bearer {secret}"})
        answer = connection.getresponse()
        body = answer.read()
        connection.close()
        assert answer.status == 400, (raw, body)
        assert b'"invalid_request_error"' in body
    ok = requests.get(f"{gateway.url}/v1/models/org%2Fm", headers={"Authorization": f"Bearer {secret}"}, timeout=10)
    assert ok.status_code == 200
    assert [r.path for r in upstream.requests] == ["/base/models/org%2Fm"]
    assert other.requests == []
