"""`GET .../v1/models`: the models this API key may call, in the OpenAI list shape.

    {"object": "list", "data": [{"id": "gpt-4o", "object": "model", "created": 0, "owned_by": "chat"}]}

The list is the gateway's own knowledge first: for every route the key may call, its model
condition (Route.models) and its targets' model aliases (the names a client may send). Then,
when a route with no model condition would take the call (its prefix covers the path; the
usual "forward everything under /v1" route), the call is forwarded to it as any call is (its
key's quotas, retries, breakers) and the models its upstream reports are merged in. That
upstream failing (unreachable, timed out, an error status, not a list) leaves its part out;
the answer is still the gateway's list, and the log row says why (detail["models_upstream"]).

A key whose routes name no model gets the call forwarded exactly as before this module (the
upstream's own answer, status included): the gateway has nothing of its own to add.

`created` is 0 for a model the gateway lists from its configuration (it records no date for
it); `owned_by` is the route that serves it. Entries from the upstream keep their own fields.
"""

import json

from .attempts import CircuitOpen
from .errors import GatewayError, UpstreamTimeout, UpstreamUnavailable
from .matching import by_path_and_method, content_matches

MAX_UPSTREAM_LIST_BYTES = 4 * 1024 * 1024  # a models list far larger than any upstream sends


def asks(incoming) -> bool:
    return incoming.method == "GET" and incoming.path.rstrip("/").endswith("/v1/models")


def configured(key, snapshot) -> dict[str, str]:
    """model id -> the route that serves it, for the routes the key may call (priority order)."""
    models: dict[str, str] = {}
    for route in snapshot.routes:
        if not key.may_call(route):
            continue
        for model in sorted(route.models):
            models.setdefault(model, route.name)
        for target in route.targets:
            for alias in sorted(target.model_aliases):
                models.setdefault(alias, route.name)
    return models


def forwarding_route(key, incoming, snapshot):
    """The route that would take this GET without a body (no model condition), if the key may call it."""
    try:
        candidates = by_path_and_method(snapshot, incoming.path, "GET")
    except GatewayError:
        return None
    for route in candidates:
        if not route.models and not route.match_body and content_matches(route, incoming.headers, None):
            return route if key.may_call(route) else None
    return None


class ModelList:
    """The answer, shaped like pipeline.Answer: iterate for the body; close() ends the call."""

    status = 200
    reason = "OK"

    def __init__(self, call, document: dict, headers: list, finish):
        self.call, self.finish = call, finish
        self.body = json.dumps(document).encode()
        self.headers = [("Content-Type", "application/json"), *headers]
        call.status = 200
        call.bytes_out = len(self.body)

    def __iter__(self):
        yield self.body

    def close(self) -> None:
        self.finish(self.call)


def answer(call, incoming, snapshot, admit, forward, finish):
    """The model list for an authenticated call, or None when the call should go on as any other.

    The pipeline hands its own steps in (admit, forward, finish): this module never imports it back."""
    if not asks(incoming):
        return None
    own = configured(call.key, snapshot)
    if not own:
        return None
    from . import quotas

    data = [{"id": model, "object": "model", "created": 0, "owned_by": owner} for model, owner in own.items()]
    headers = []
    route = forwarding_route(call.key, incoming, snapshot)
    call.detail["match"] = "the model list (configured models of the key's routes)"
    if route is not None:
        call.route = route
        admit(call)  # the key's limits hold as for any call (429 is the key's answer)
        headers += quotas.answer_headers(call.admission)
        reported, why = upstream_models(call, incoming, snapshot, forward)
        if why:
            call.detail["models_upstream"] = why
        listed = set(own)
        data += [entry for entry in reported if entry["id"] not in listed]
    return ModelList(call, {"object": "list", "data": data}, headers, finish)


def upstream_models(call, incoming, snapshot, forward) -> tuple[list[dict], str]:
    """What the forwarding route's upstream lists, and why nothing when it failed."""
    try:
        upstream = forward(call, incoming, snapshot, b"", None)
    except (UpstreamUnavailable, UpstreamTimeout, CircuitOpen) as exc:
        return [], f"{exc.status_code} {exc.error_type}: {exc.detail}"
    try:
        body = bytearray()
        for chunk in upstream.iter_content(64 * 1024):
            body += chunk
            if len(body) > MAX_UPSTREAM_LIST_BYTES:
                return [], f"the upstream's list is larger than {MAX_UPSTREAM_LIST_BYTES} bytes"
        status = upstream.status_code
    except Exception as exc:  # the connection broke while reading: the configured list still answers
        return [], f"reading the upstream's list failed ({type(exc).__name__})"
    finally:
        upstream.close()
    call.upstream_ms = call.latency_ms
    if not 200 <= status < 300:
        return [], f"the upstream answered {status}"
    try:
        data = json.loads(bytes(body)).get("data")
    except (ValueError, AttributeError):
        data = None
    if not isinstance(data, list):
        return [], "the upstream's answer is not a model list"
    return [entry for entry in data if isinstance(entry, dict) and isinstance(entry.get("id"), str)], ""
