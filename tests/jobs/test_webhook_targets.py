"""Where a webhook goes: only to the host and port the allow-list check named.

Real receivers listen on 127.0.0.1 and 127.0.0.2; the allow-list names one of them. Callback URLs
built from parser-confusing pieces (backslashes, userinfo, control characters, other spellings of
the host and port, encoded tricks) go through the submission check and the real delivery code:
an accepted URL reaches the named receiver only, at the path it names; a refused one, even when
stored anyway (a row older than the check), reaches nobody. The key's view of its deliveries
holds no network detail, and each key signs with its own secret.
"""

import hashlib
import hmac
import json
import time
import uuid
from urllib.parse import urlsplit

import pytest
from django.db import connection
from django.test import override_settings
from django.utils import timezone
from django_tasks_db.models import DBTaskResult
from hypothesis import HealthCheck, event, example, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from jobs import signing, webhooks
from jobs.models import Job, Status, WebhookDelivery
from proxy.errors import InvalidRequest
from routes_admin import callbacks
from tests.examples import examples
from tests.factories import auth, make_key, make_route, make_target
from tests.servers import free_port
from tests.upstream import Handler, UpstreamServer

WEBHOOK_SECRET = "webhook-targets-test-secret"
BODY = b'{"model": "m", "messages": [{"role": "user", "content": "hi"}]}'


class CountingHandler(Handler):
    def setup(self):
        super().setup()
        self.server.owner.connections += 1  # any connection, even one that never sends a request


class Receiver(UpstreamServer):
    """A receiver that counts connections as well as requests."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        super().__init__(host, port)
        self.connections = 0
        self.httpd.RequestHandlerClass = CountingHandler

    def clear(self) -> None:
        self.connections = 0
        self.requests.clear()


@pytest.fixture(scope="module")
def receivers():
    """A: the allowed receiver (127.0.0.1:PA); B: 127.0.0.1 on another port; C: 127.0.0.2 on PA."""
    for _ in range(20):
        a = Receiver()
        try:
            c = Receiver("127.0.0.2", a.port)
            break
        except OSError:  # PA taken on 127.0.0.2: try another port
            a.stop()
    else:
        pytest.skip("no port free on both 127.0.0.1 and 127.0.0.2")
    b = Receiver()
    yield {"A": a, "B": b, "C": c}
    for receiver in (a, b, c):
        receiver.stop()


# Pieces of callback URLs. {A} and {B} stand for the ports of receivers A and B.
SCHEMES = ["http://", "http://", "https://", "HTTP://", "http:/", "http:\\\\", "http:///", "//", "ftp://", "http:"]
HOSTS = [
    "127.0.0.1", "127.0.0.1", "localhost", "LocalHost", "127.0.0.2", "[::1]", "[::ffff:127.0.0.1]", "127.1",
    "0x7f.0.0.1", "0x7f000001", "2130706433", "0177.0.0.1", "127.0.0.1.", "localhost.", "[::1%25lo]", "[::1%lo]",
    "%31%32%37.0.0.1", "loc%61lhost", "\uff4cocalhost", "local\u0000host", "",
]  # fmt: skip
PORTS = [":{A}", ":{A}", ":{B}", "", ":", ":0{A}", ":+{A}", ":{A}0", ": {A}", ":80", ":{A}:{B}"]
JUNK = [
    "\\", "@", "\\@", "%5C@", "%5c", "%40", "#", "#@", "?", "?@", "/", "//", "\t", "\n", "\r\n", " ", "\x00",
    ";", ":", "&", "..", "/..", "/../", "/%2e%2e/", "%", "%zz", "%2F", "%7e", "[", "]", "hook", "/hook", "a=b",
    "\u3002", "\uff0e", "\u00e9",
]  # fmt: skip
authorities = st.builds(lambda host, port: host + port, st.sampled_from(HOSTS), st.sampled_from(PORTS))
# Pieces a receiver's path and query may well hold.
PLAIN = ["/", "/hook", "a", "?", "q=1", "&", "%7e", "%2F", "%aa", ";", ":", "@", "=", "~", "!", "'", "(", "*", "+"]
hostile = st.builds(
    lambda scheme, authority, rest: scheme + authority + "".join(rest),
    st.sampled_from(SCHEMES),
    authorities,
    st.lists(st.one_of(st.sampled_from(JUNK), authorities), max_size=6),
)
# URLs that start like a good one, so that many are accepted and really delivered.
plausible = st.builds(
    lambda scheme, host, port, rest: scheme + host + port + "/" + "".join(rest),
    st.sampled_from(["http://", "http://", "https://"]),
    st.sampled_from(["127.0.0.1", "localhost", "LOCALHOST", "127.0.0.2"]),
    st.sampled_from([":{A}", ":{A}", ":{B}"]),
    st.lists(st.one_of(st.sampled_from(PLAIN), st.sampled_from(PLAIN), st.sampled_from(JUNK), authorities), max_size=8),
)
callback_urls = st.one_of(hostile, plausible, plausible)


def a_job(key, route, callback_url: str) -> Job:
    return Job.objects.create(
        api_key=key,
        route=route,
        route_name=route.name,
        created=timezone.now(),
        status=Status.SUCCEEDED,
        finished=timezone.now(),
        request_id=uuid.uuid4().hex,
        method="POST",
        path="/v1/chat/completions",
        callback_url=callback_url,
    )


@pytest.mark.django_db
@hypothesis_settings(
    max_examples=examples(300),
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(template=callback_urls)
@example(template="http://127.0.0.1:{B}\\@localhost:{A}/hook")
@example(template="http://127.0.0.1:{B}\\@127.0.0.1:{A}/hook")
@example(template="http://localhost:{A}/hook")
@example(template="http://127.0.0.2:{A}/hook")
@example(template="http://127.0.0.1:{A}/a/%7e%2f;x=1?q=%aa&r=@")
@example(template="http://127.0.0.1:{B}#@127.0.0.1:{A}/")
@example(template="http://127.0.0.1:{B}?@127.0.0.1:{A}/")
@example(template="http://127.0.0.1\t:{A}/hook")
@example(template="https://127.0.0.1:{A}/hook")
def test_a_callback_reaches_only_the_host_and_port_the_check_named(receivers, template):
    ports = {"A": receivers["A"].port, "B": receivers["B"].port}
    url = template.replace("{A}", str(ports["A"])).replace("{B}", str(ports["B"]))
    allowed = {("127.0.0.1", ports["A"]), ("localhost", ports["A"])}
    with override_settings(
        GATEWAY_WEBHOOK_HOSTS=[f"{host}:{port}" for host, port in allowed],
        GATEWAY_WEBHOOK_SECRET=WEBHOOK_SECRET,
        GATEWAY_WEBHOOK_MAX_ATTEMPTS=1,
        GATEWAY_WEBHOOK_TIMEOUT=2,
    ):
        try:
            stored, accepted = webhooks.check_url(url), True
        except InvalidRequest:
            stored, accepted = url, False  # as a row written before this check would hold it
        key, route = TARGET["key"], TARGET["route"]
        for receiver in receivers.values():
            receiver.clear()
        if "\x00" not in stored or connection.vendor != "postgresql":  # PostgreSQL stores no NUL
            webhooks.deliver(str(a_job(key, route, stored).id), 1)

    a, b, c = receivers["A"], receivers["B"], receivers["C"]
    assert (b.connections, c.connections) == (0, 0), f"{url!r} reached another receiver"
    event("accepted" if accepted else "refused")
    if not accepted:
        assert a.connections == 0, f"{url!r} was refused but delivered"
        return
    named = urlsplit(stored)
    assert (named.hostname, named.port) in allowed
    assert a.connections == 1
    if named.scheme == "http":  # receiver A speaks no TLS: an https delivery connects, then fails
        (received,) = a.requests
        assert received.headers["host"] == named.netloc
        assert (
            received.path + (f"?{received.query}" if received.query else "")
            == stored[len("http://") + len(named.netloc) :]
        )


TARGET: dict = {}


@pytest.fixture(autouse=True)
def key_and_route(db):
    """A key and route for jobs made directly (shared with the Hypothesis test through TARGET)."""
    route = make_route(name="chat")
    key, secret = make_key(routes=[route])
    TARGET.update(key=key, route=route, secret=secret)
    yield
    TARGET.clear()


@given(template=callback_urls)
@hypothesis_settings(max_examples=examples(300), deadline=None, database=None)
def test_the_url_sent_is_a_fixed_point_of_the_check(template):
    """What is stored and signed reads back as itself: a second parse changes nothing."""
    url = template.replace("{A}", "8000").replace("{B}", "9000")
    try:
        first = callbacks.read(url)
    except callbacks.Refused:
        return
    assert callbacks.read(first.url) == first
    assert callbacks.read(first.url).url == first.url


@pytest.mark.parametrize(
    ("entry", "url", "accepted"),
    [
        ("hooks.example.com", "https://hooks.example.com/ai", True),
        ("hooks.example.com", "http://hooks.example.com/ai", True),
        ("hooks.example.com", "http://hooks.example.com:443/ai", False),  # a bare host: its scheme's port only
        ("hooks.example.com", "https://hooks.example.com:8443/ai", False),
        ("hooks.example.com:8443", "https://hooks.example.com:8443/ai", True),
        ("HOOKS.example.com", "https://Hooks.Example.COM/ai", True),
        ("[::1]:9000", "http://[0:0::1]:9000/", True),
        ("127.0.0.1:9000", "http://127.0.0.1:9000@hooks.example.com/", False),
        ("hooks.example.com", "http://user:pw@hooks.example.com/", False),
        ("hooks.example.com", "http://hooks.example.com/" + "a" * 2000, False),
    ],
)
def test_the_allow_list_names_hosts_and_ports(entry, url, accepted):
    with override_settings(GATEWAY_WEBHOOK_HOSTS=[entry]):
        try:
            callbacks.parse(url)
            assert accepted
        except callbacks.Refused:
            assert not accepted


@override_settings(GATEWAY_WEBHOOK_HOSTS=["169.254.169.254", "metadata.google.internal"])
@pytest.mark.parametrize("url", ["http://169.254.169.254/latest", "http://metadata.google.internal/x"])
def test_an_allowed_host_at_a_metadata_address_is_never_connected_to(url):
    with pytest.raises(callbacks.Refused):
        callbacks.addresses(callbacks.parse(url))


def submit(client, secret, path="/v1/chat/completions", **headers):
    response = client.post(
        path, BODY, content_type="application/json", HTTP_PREFER="respond-async", **headers, **auth(secret)
    )
    return response, json.loads(b"".join(response.streaming_content) if response.streaming else response.content)


@pytest.mark.parametrize(
    ("path", "callback", "status"),
    [
        ("/v1/chat/completions", "http://127.0.0.1:{B}\\@127.0.0.1:{A}/hook", 400),
        ("/v1/chat/completions", "http://127.0.0.1:{A}/" + "h" * 2000, 400),
        ("/v1/" + "p" * 2001, "", 414),
    ],
)
def test_a_refused_job_is_a_json_4xx_creates_nothing_and_costs_no_quota(
    client, upstream, receivers, path, callback, status
):
    route = TARGET["route"]
    make_target(route, upstream.url)
    _, secret = make_key(routes=[route], requests_per_minute=1)
    callback = callback.replace("{A}", str(receivers["A"].port)).replace("{B}", str(receivers["B"].port))
    headers = {"HTTP_X_CALLBACK_URL": callback} if callback else {}
    with override_settings(
        GATEWAY_WEBHOOK_HOSTS=[f"127.0.0.1:{receivers['A'].port}"], GATEWAY_WEBHOOK_SECRET=WEBHOOK_SECRET
    ):
        response, body = submit(client, secret, path=path, **headers)
    assert response.status_code == status, body
    assert body["error"]["type"] == "invalid_request_error" and body["error"]["request_id"]
    assert Job.objects.count() == 0 and DBTaskResult.objects.count() == 0
    # Not counted: the key's one request a minute is still there.
    answered = client.post("/v1/chat/completions", BODY, content_type="application/json", **auth(secret))
    assert answered.status_code == 200


@override_settings(GATEWAY_WEBHOOK_SECRET=WEBHOOK_SECRET, GATEWAY_WEBHOOK_MAX_ATTEMPTS=1)
def test_the_keys_view_of_a_failed_delivery_holds_no_network_detail(client):
    closed = free_port()  # nothing listens there: connection refused
    key, secret = TARGET["key"], TARGET["secret"]
    answered = Receiver()
    answered.reply = lambda handler: handler.send_json(404, {})
    try:
        with override_settings(GATEWAY_WEBHOOK_HOSTS=[f"127.0.0.1:{closed}", f"127.0.0.1:{answered.port}"]):
            refused_job = a_job(key, TARGET["route"], f"http://127.0.0.1:{closed}/hook")
            webhooks.deliver(str(refused_job.id), 1)
            answered_job = a_job(key, TARGET["route"], f"http://127.0.0.1:{answered.port}/hook")
            webhooks.deliver(str(answered_job.id), 1)
    finally:
        answered.stop()
    (seen,) = client.get(f"/jobs/{refused_job.id}", **auth(secret)).json()["webhook_deliveries"]
    assert seen == {"attempt": 1, "at": seen["at"], "delivered": False, "status": None}
    (seen,) = client.get(f"/jobs/{answered_job.id}", **auth(secret)).json()["webhook_deliveries"]
    assert seen == {"attempt": 1, "at": seen["at"], "delivered": False, "status": 404}
    # Operators still have the detail (the admin's delivery rows).
    assert "Connection" in WebhookDelivery.objects.get(job=refused_job).error


def test_each_key_signs_with_its_own_secret_which_rotates_with_the_key(client, settings):
    settings.GATEWAY_WEBHOOK_HOSTS = ["hooks.example.com"]
    settings.GATEWAY_WEBHOOK_SECRET = WEBHOOK_SECRET
    key, secret = TARGET["key"], TARGET["secret"]
    _, other_secret = make_key(routes=[TARGET["route"]])

    def shown(api_key_secret):
        response = client.get("/jobs/webhook-secret", **auth(api_key_secret))
        assert response.status_code == 200 and response["Cache-Control"] == "no-store"
        return response.json()["secret"]

    mine, theirs = shown(secret), shown(other_secret)
    assert mine.startswith("whsec_") and mine != theirs
    assert client.get("/jobs/webhook-secret").status_code == 401
    settings.SECRET_KEY = "another-django-secret"
    assert shown(secret) == mine  # not Django's SECRET_KEY
    settings.GATEWAY_WEBHOOK_SECRET = "another-webhook-secret"
    assert shown(secret) != mine
    settings.GATEWAY_WEBHOOK_SECRET = WEBHOOK_SECRET
    key.prefix = "0000aaaa"  # what a rotation changes
    key.save(update_fields=["prefix"])
    assert signing.secret_for_key(key.id) != mine


def verified(secret: str, url: str, headers: dict, body: bytes) -> bool:
    """The README's receiver check, verbatim in substance."""
    timestamp = headers["x-gateway-timestamp"]
    message = f"{timestamp}\n{url}\n".encode() + body
    expected = "sha256=" + hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()
    fresh = abs(time.time() - int(timestamp)) < 300
    return fresh and hmac.compare_digest(expected, headers["x-gateway-signature"])


def test_the_signature_covers_the_destination_and_the_key(client, receivers):
    a = receivers["A"]
    a.clear()
    hook = f"http://127.0.0.1:{a.port}/hook"
    with override_settings(GATEWAY_WEBHOOK_HOSTS=[f"127.0.0.1:{a.port}"], GATEWAY_WEBHOOK_SECRET=WEBHOOK_SECRET):
        secret = client.get("/jobs/webhook-secret", **auth(TARGET["secret"])).json()["secret"]
        _, other = make_key(routes=[TARGET["route"]])
        others = client.get("/jobs/webhook-secret", **auth(other)).json()["secret"]
        webhooks.deliver(str(a_job(TARGET["key"], TARGET["route"], hook).id), 1)
    (received,) = a.requests
    assert verified(secret, hook, received.headers, received.body)
    assert not verified(secret, f"http://127.0.0.1:{a.port}/other", received.headers, received.body)
    assert not verified(others, hook, received.headers, received.body)


def test_the_issues_url_is_refused_at_submission_and_never_contacted(client, upstream, receivers):
    """The reported case end to end: refused with 400, and a decoy listening where urllib3 would
    have gone hears nothing."""
    route = TARGET["route"]
    make_target(route, upstream.url)
    a, b = receivers["A"], receivers["B"]
    a.clear(), b.clear()
    url = f"http://127.0.0.1:{b.port}\\@localhost:{a.port}/hook"
    with override_settings(GATEWAY_WEBHOOK_HOSTS=[f"localhost:{a.port}"], GATEWAY_WEBHOOK_SECRET=WEBHOOK_SECRET):
        response, body = submit(client, TARGET["secret"], HTTP_X_CALLBACK_URL=url)
    assert response.status_code == 400 and "backslash" in body["error"]["message"]
    assert (a.connections, b.connections) == (0, 0)


def test_a_delivery_connects_to_the_checked_addresses_of_the_checked_host_only():
    """The pins a delivery's connections use: any host but the checked one is refused before a
    socket is opened, and the checked one gets the addresses checked, not a new DNS answer."""
    lookup = webhooks.pinned_lookup(callbacks.Callback("http", "[::1]", 9000, "/"), ["::1"])
    assert lookup("::1") == ["::1"] and lookup("[::1]") == ["::1"]
    for other in ("127.0.0.1", "localhost", "::2"):
        with pytest.raises(OSError):
            lookup(other)


def test_a_url_the_check_refuses_at_delivery_is_not_tried_again(receivers):
    """The allow-list changed after submission: the delivery is refused without a connection,
    recorded as failed, and no further attempt is queued."""
    a = receivers["A"]
    a.clear()
    hook = f"http://127.0.0.1:{a.port}/hook"
    with override_settings(GATEWAY_WEBHOOK_HOSTS=["hooks.example.com"], GATEWAY_WEBHOOK_SECRET=WEBHOOK_SECRET):
        job = a_job(TARGET["key"], TARGET["route"], hook)
        webhooks.deliver(str(job.id), 1)
    assert a.connections == 0
    delivery = WebhookDelivery.objects.get(job=job)
    assert (delivery.status, delivery.delivered) == (None, False) and delivery.error.startswith("refused:")
    assert not DBTaskResult.objects.filter(queue_name="webhooks").exists()
