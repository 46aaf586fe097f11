"""The call path, one step per function, read top to bottom (docs/architecture.md).

    1 authenticate -> 2 match -> 3 permit -> 4 admit -> 5 forward -> 6 respond -> 7 finish
                                               4b queue (a job: jobs/ answers 202; a worker runs 5-7 later)

`run()` takes an `Incoming`: the call's explicit input, no Django request, so the proxy view
and the job worker (`run_job()`) go through the same code. Each call reads ONE configuration
snapshot. Steps 1-5 raise a GatewayError (proxy/errors.py) for the gateway's own answers; the
call is finished before the error leaves this module. Whatever happens, `finish()` ends a call
exactly once: its admission released, its metrics counted, its log row recorded.
"""

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from django.conf import settings

from routes_admin.models import ErrorType

from . import (
    authentication,
    balancing,
    breaker,
    budgets,
    costs,
    metrics,
    models_list,
    quotas,
    recording,
    runtime,
)
from .attempts import forward as forward_with_retries
from .call import Call
from .config import KeyInfo, RouteInfo, Snapshot
from .errors import GatewayError, InvalidAPIKey, InvalidRequest, KeyNotAllowed, PayloadTooLarge, RouteNotFound, describe
from .forwarding import Outgoing, UpstreamBody
from .headers import client_response_headers
from .live import Runtime
from .matching import by_path_and_method, choose, document_for, requested_model, why_matched
from .usage import ask_for_usage

log = logging.getLogger("gateway.pipeline")


@dataclass
class Incoming:
    """A call as it arrived, before the gateway knows anything about it."""

    method: str
    path: str  # decoded, e.g. /v1/chat/completions
    query: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)  # looked up case-insensitively
    body: bytes | None = None  # the whole body, when it is already read (a queued job's)
    read_body: Callable[[int], bytes] | None = None  # else: reads at most `limit` + 1 bytes, or 413
    raw_path: str = ""  # as sent, percent-encoded; "" when unknown
    client_ip: str = ""
    forwarded_for: str = ""  # X-Forwarded-For as the gateway vouches for it; "" = client_ip alone
    request_id: str = ""
    scheme: str = "http"
    host: str = ""

    def body_up_to(self, limit: int) -> bytes:
        body = self.body if self.body is not None else (self.read_body(limit) if self.read_body else b"")
        if len(body) > limit:
            raise too_large(limit)
        return body


class Answer:
    """The upstream's answer on its way to the client: iterate for the body; close() ends the call."""

    def __init__(self, call: Call, upstream, headers: list[tuple[str, str]]):
        self.call = call
        self.status = upstream.status_code
        self.reason = upstream.reason
        self.headers = headers
        self._body = UpstreamBody(call, upstream)

    def __iter__(self):
        return iter(self._body)

    def close(self) -> None:
        """Called when the body is done, or the client left; runs once whatever the path."""
        try:
            self._body.close()
        finally:
            finish(self.call)


def run(incoming: Incoming, live: Runtime | None = None) -> Answer:
    """Steps 1 to 6 for a call that came in over HTTP; step 7 runs when the answer closes.

    `live`: this process's runtime (proxy/runtime.py), which the view passes; its configuration
    copy serves the call and its job submitter takes the call when it becomes a job."""
    if live is None:
        live = runtime.current()
    call = start(incoming)
    try:
        snapshot = live.config.current()
        call.prices = snapshot.prices
        call.key = authenticate(incoming, snapshot)
        # GET /v1/models: the key's models, an answer of the pipeline's own that runs its steps.
        listed = models_list.answer(call, incoming, snapshot, admit=admit, forward=forward, finish=finish)
        if listed is not None:
            return listed
        body, document = match(call, incoming, snapshot)
        permit(call.key, call.route)
        queued = becomes_job(incoming, call.route)
        if queued:
            check_job(incoming, live)  # before admit: a job refused for its own input is not counted
        admit(call, body)
        if queued:
            return submit_job(call, incoming, body, live)
        upstream = forward(call, incoming, snapshot, body, document)
    except BaseException as exc:
        end_with_error(call, exc)
        raise
    return respond(call, upstream)


def run_job(
    incoming: Incoming, *, key_id: int, route_id: int, job_id: str = "", queued_ms: float | None = None
) -> Answer:
    """Steps 5 to 7 for a call accepted earlier and queued (no web request).

    Its key and route are named by id, since the job's request keeps no secret. The key must
    still be usable and allowed on the route; its requests were counted when it was accepted,
    so only what it spends is admitted now (quotas.admit_job: its token quotas).
    """
    call = start(incoming)
    call.job_id, call.queue_ms = job_id, queued_ms  # its log row is marked as a job's run
    try:
        snapshot = runtime.current().config.current()
        call.prices = snapshot.prices
        key = snapshot.key_by_id(key_id)
        if key is None:
            raise InvalidAPIKey("The API key that queued this job no longer exists.")
        call.key = authentication.usable(key)
        call.route = snapshot.routes_by_id.get(route_id)
        if call.route is None:
            raise RouteNotFound("The route this job was queued for no longer exists or is disabled.")
        body = incoming.body_up_to(call.route.max_body_bytes)
        call.bytes_in = len(body)
        call.model = requested_model(None, body)  # its price, its budget estimate and its row's model
        permit(call.key, call.route)
        admit_job(call)
        budgets.admit(call, body)  # a job's run reserves and settles its cost like a call
        upstream = forward(call, incoming, snapshot, body, None)
    except BaseException as exc:
        end_with_error(call, exc)
        raise
    return respond(call, upstream)


def start(incoming: Incoming) -> Call:
    metrics.started()
    return Call(
        request_id=incoming.request_id, method=incoming.method, path=incoming.path, client_ip=incoming.client_ip
    )


# 1 ---------------------------------------------------------------------------------------------
def authenticate(incoming: Incoming, snapshot: Snapshot) -> KeyInfo:
    return authentication.check_key(authentication.key_from_headers(incoming.headers), snapshot)


# 2 ---------------------------------------------------------------------------------------------
def match(call: Call, incoming: Incoming, snapshot: Snapshot) -> tuple[bytes, object]:
    """call.route from the path, method, headers and (when a route asks) the JSON body.

    Returns the body (read up to the largest limit among the candidates, 413 beyond) and the
    parsed JSON document (None when no route needed it).
    """
    candidates = by_path_and_method(snapshot, incoming.path, incoming.method)
    body = incoming.body_up_to(max(route.max_body_bytes for route in candidates))
    call.bytes_in = len(body)
    document = document_for(candidates, body)
    call.model = requested_model(document, body)
    call.route = choose(candidates, incoming.headers, document)
    call.detail["match"] = why_matched(call.route)
    if len(body) > call.route.max_body_bytes:
        raise too_large(call.route.max_body_bytes)
    return body, document


def too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"The request body is larger than this route allows ({limit} bytes).")


# 3 ---------------------------------------------------------------------------------------------
def permit(key: KeyInfo, route: RouteInfo) -> None:
    if not key.may_call(route):
        raise KeyNotAllowed(f"This API key may not call the route {route.name}.", auth="route_not_allowed")


# 4 ---------------------------------------------------------------------------------------------
def admit(call: Call, body: bytes = b"") -> None:
    """Quotas and concurrency (proxy/quotas.py), then budgets in money (proxy/budgets.py: an
    estimate of the call's cost reserved); a refusal raises RateLimited (429).

    The route's breaker states (read by step 5) ride along with the token counters' read: one
    cache round trip fewer per call when the key has a token limit.
    """
    quotas.admit(call, read_ahead=breaker.keys(target.id for target in call.route.targets))
    budgets.admit(call, body)


def admit_job(call: Call) -> None:
    """Step 4 for a queued job, when it runs: what the call spends must still be allowed
    (quotas.admit_job: token quotas; a refusal raises RateLimited and fails the job)."""
    quotas.admit_job(call)


# 4b --------------------------------------------------------------------------------------------
class JobsUnavailable(GatewayError):
    status_code = 503
    error_type = ErrorType.SERVICE_UNAVAILABLE
    default_detail = "This gateway runs no job queue; send the call without Prefer: respond-async."


def set_job_submitter(submit: Callable, check: Callable | None = None) -> None:
    """This process's runtime's job submitter (Runtime.set_job_submitter says what they do)."""
    runtime.current().set_job_submitter(submit, check)


def prefers_async(headers) -> bool:
    """RFC 7240: `Prefer: respond-async` (among other preferences, any case)."""
    prefer = headers.get("Prefer", "")
    return bool(prefer) and any(
        p.split(";")[0].split("=")[0].strip().lower() == "respond-async" for p in prefer.split(",")
    )


def becomes_job(incoming: Incoming, route: RouteInfo) -> bool:
    """Whether the call is queued (the route's processing mode, or the client's preference)."""
    if route.processing_mode == "async":
        return True
    if not prefers_async(incoming.headers):
        return False
    if route.processing_mode == "sync-only":
        raise InvalidRequest(f"The route {route.name} answers synchronously only: drop Prefer: respond-async.")
    return True


def check_job(incoming: Incoming, live: Runtime) -> None:
    if live.job_check is not None:
        live.job_check(incoming)


def submit_job(call: Call, incoming: Incoming, body: bytes, live: Runtime):
    if live.job_submitter is None:
        raise JobsUnavailable()
    return live.job_submitter(call, incoming, body)


# 5 ---------------------------------------------------------------------------------------------
def forward(call: Call, incoming: Incoming, snapshot: Snapshot, body: bytes, document):
    """The first usable upstream answer (retries, breakers, fallback: proxy/attempts.py)."""
    body, document = ask_for_usage(incoming.path, body, document)
    call.counts_tokens = b'"model"' in body  # an AI call: cut before its usage, it gets an estimate
    outgoing = Outgoing(
        method=incoming.method,
        path=incoming.path,
        raw_path=incoming.raw_path,
        query=incoming.query,
        body=body,
        document=document,
        headers=incoming.headers,
        scheme=incoming.scheme,
        host=incoming.host,
        request_id=call.request_id,
        client_ip=call.client_ip,
        forwarded_for=incoming.forwarded_for,
    )
    return forward_with_retries(call, snapshot, outgoing)


# 6 ---------------------------------------------------------------------------------------------
def respond(call: Call, upstream) -> Answer:
    call.status = upstream.status_code
    call.upstream_ms = call.latency_ms
    call.streamed = upstream.headers.get("Content-Type", "").startswith("text/event-stream")
    if call.model and call.held_target is not None:
        call.upstream_model = call.held_target.model_aliases.get(call.model, call.model)
    headers = client_response_headers(upstream.headers)
    if settings.GATEWAY_EXPOSE_TARGET:
        headers.append(("X-Gateway-Target", call.target))
    if call.fallback_from:
        headers.append(("X-Gateway-Fallback", call.route.name))  # the route that answered instead
    headers += quotas.answer_headers(call.admission)
    return Answer(call, upstream, headers)


# 7 ---------------------------------------------------------------------------------------------
def end_with_error(call: Call, exc: BaseException) -> None:
    """A call that ends with the gateway's own answer (or a bug: 500), and why, for its log row."""
    status, error_type, message, _headers = describe(exc)
    extra = getattr(exc, "extra", {})
    call.fail(status, error_type, extra.get("limit", ""))
    call.detail["why"] = message
    if call.key is None:
        call.key = extra.get("key")  # a refused key whose secret was right: the row names it
    for name in ("auth", "quota"):  # the key's fault (401/403), the limit that refused it (429)
        if name in extra:
            call.detail[name] = extra[name]
    finish(call)


def finish(call: Call) -> None:
    """End the call once: release what it holds, count it, record it. Never raises."""
    if call.finished:
        return
    call.finished = True
    latency_ms = call.latency_ms
    admission, tokens_added = call.admission, None
    try:
        costs.price_call(call)
        # The call's tokens go to its token counters in the settlement's round trip, if it makes one.
        tokens_added = budgets.settle(call, admission.token_deltas(call) if admission is not None else ())
    except Exception:
        log.exception("pricing call %s failed", call.request_id)
    try:
        if admission is not None:
            admission.release(call, tokens_added)
    except Exception:
        log.exception("releasing the admission of call %s failed", call.request_id)
    if call.held_target is not None:
        balancing.release(call.held_target)
    metrics.finished(call, latency_ms)
    recording.record(call, latency_ms)
