"""Step 2: which route serves a call, from its path, method, headers and JSON body."""

import json
import re

from .config import RouteInfo, Snapshot
from .errors import InvalidRequest, MethodNotAllowed, RouteNotFound

MISSING = object()


def path_matches(prefix: str, path: str) -> bool:
    """Prefix /v1 matches /v1 and /v1/..., not /v10."""
    return not prefix or path == prefix or path.startswith(prefix + "/")


def by_path_and_method(snapshot: Snapshot, path: str, method: str) -> list[RouteInfo]:
    """Routes whose prefix matches and which allow the method, most specific first.

    404 when no prefix matches; 405 (with the methods allowed) when only the method is wrong.
    """
    on_path = [route for route in snapshot.routes if path_matches(route.prefix, path)]
    if not on_path:
        raise RouteNotFound()
    allowed = [route for route in on_path if route.allows(method)]
    if not allowed:
        methods = sorted(set().union(*(route.methods for route in on_path)))
        raise MethodNotAllowed(
            f"{method} is not allowed here; use {', '.join(methods)}.", headers={"Allow": ", ".join(methods)}
        )
    return allowed


INVALID_JSON = object()


def parse_json_body(body: bytes):
    """The JSON body, None when there is none, INVALID_JSON when it is not JSON."""
    if not body:
        return None
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return INVALID_JSON


def body_field(document, dotted: str):
    value = document
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return MISSING
        value = value[part]
    return value


def header_matches(route: RouteInfo, headers) -> bool:
    for name, expected in route.match_headers.items():
        actual = headers.get(name)
        if actual is None or (expected != "*" and actual != str(expected)):
            return False
    return True


def content_matches(route: RouteInfo, headers, document) -> bool:
    if not header_matches(route, headers):
        return False
    if route.models:
        model = document.get("model") if isinstance(document, dict) else None
        if model not in route.models:
            return False
    for dotted, expected in route.match_body.items():
        if body_field(document, dotted) != expected:
            return False
    return True


def document_for(candidates: list[RouteInfo], body: bytes):
    """The parsed JSON body when a candidate matches on it, else None (no parsing cost)."""
    return parse_json_body(body) if any(route.needs_body for route in candidates) else None


def choose(candidates: list[RouteInfo], headers, document) -> RouteInfo:
    """The first candidate (longest prefix, then highest priority) whose conditions hold."""
    for route in candidates:
        if content_matches(route, headers, document):
            return route
    if document is INVALID_JSON:
        raise InvalidRequest("The request body is not valid JSON.")
    if isinstance(document, dict) and "model" in document and any(route.models for route in candidates):
        raise RouteNotFound(f"No route serves the model {document['model']!r} on this path.")
    raise RouteNotFound("No route matches this request.")


# The requested model for the log row when no route needed the body parsed: the first string
# "model" field in the first 4 KB (SDKs send it near the top). Only recorded, never routed on:
# routing parses the body (see document_for()). A "model" inside a string is escaped, so not matched.
MODEL_FIELD = re.compile(rb'"model"\s*:\s*("(?:[^"\\]|\\.){1,200}")')
MODEL_SCAN_BYTES = 4096


def requested_model(document, body: bytes) -> str:
    """The JSON body's model, or "" when it names none."""
    if isinstance(document, dict):
        model = document.get("model")
        return model if isinstance(model, str) else ""
    if document is not None or not body:
        return ""
    found = MODEL_FIELD.search(body, 0, MODEL_SCAN_BYTES)
    if found is None:
        return ""
    try:
        return json.loads(found.group(1))
    except ValueError:
        return ""


def why_matched(route: RouteInfo) -> str:
    """What the route matched on, in words, for the log row's explanation of the call."""
    words = [f"route {route.name}: prefix {route.prefix or '/'}"]
    if route.models:
        words.append("model")
    if route.match_headers:
        words.append("headers " + ", ".join(route.match_headers))
    if route.match_body:
        words.append("body " + ", ".join(route.match_body))
    return ", ".join(words)
