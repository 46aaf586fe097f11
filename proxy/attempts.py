"""Which target serves a call, and what happens when it fails: retries, breakers, fallback.

A call tries its route's targets in the order the route's strategy gives (balancing.py),
skipping targets whose circuit breaker is open (breaker.py), up to route.max_attempts. It moves
on to the next target only before any byte of an answer has reached the client:

- on a connection error or timeout, and on an answer whose status is in route.retry_statuses
  (that answer is closed first, unless no other attempt is possible: then the client gets it);
- a connection that was never made (refused, unresolvable) is retried for any method; every
  other retry of POST or PATCH needs route.retry_non_idempotent, since the upstream may have
  acted on the call already;
- an upstream Retry-After of up to MAX_RETRY_AFTER seconds is waited out; a longer one ends the
  retries and goes back to the client as it is.

When the route's attempts are all spent on failures, the call goes on to its fallback route (if
any): the answer then carries X-Gateway-Fallback and the log row records call.fallback_from.

When every target of a route has an open breaker, the call does not wait on targets known to be
failing: it goes to the fallback route, or gets 503 with a Retry-After at the end of the
earliest cooldown.
"""

import dataclasses
import logging
import math
import random
import time

import requests

from routes_admin.models import ErrorType

from . import balancing, breaker, ssrf
from .config import RouteInfo, Snapshot, TargetInfo
from .errors import GatewayError, UpstreamTimeout, UpstreamUnavailable
from .forwarding import Outgoing, check_path, send
from .matching import path_matches

log = logging.getLogger("gateway.attempts")

NON_IDEMPOTENT = frozenset({"POST", "PATCH"})  # RFC 9110 §9.2.2: every other method is idempotent
MAX_RETRY_AFTER = 2.0  # seconds; an upstream asking for longer is answered to the client as is
BACKOFF_BASE = 0.05  # seconds before the 2nd attempt, doubling after, with jitter
BACKOFF_MAX = 0.5
MAX_FALLBACK_HOPS = 3


class CircuitOpen(GatewayError):
    status_code = 503
    error_type = ErrorType.UPSTREAM_UNAVAILABLE
    default_detail = "Every upstream of this route is failing; the gateway is not sending it calls for now."


def backoff(retry: int) -> float:
    """Seconds to wait before retry number `retry` (1 for the second attempt)."""
    return min(BACKOFF_MAX, BACKOFF_BASE * 2 ** (retry - 1)) * random.uniform(0.5, 1.0)


def retry_after(response: requests.Response) -> float | None:
    """The upstream's Retry-After in seconds (delay form only), or None."""
    value = response.headers.get("Retry-After", "").strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return math.inf  # an HTTP date: always longer than we would wait for


def _candidates(route: RouteInfo, hold: float, read_ahead: dict | None, tried: list):
    """(target, is_probe) in the order to try them, claiming a probe lock only when reached.

    Targets passed over are noted in `tried` (the call's record of its attempts). Raises
    CircuitOpen when the route has targets but every one is cooling down.
    """
    targets = [t for t in route.targets if ssrf.target_allowed(t.url)]
    if len(targets) < len(route.targets):
        tried += [{"target": t.name, "skipped": "not_allowed"} for t in route.targets if t not in targets]
    if not targets:
        raise UpstreamUnavailable(f"The route {route.name} has no usable target.")
    now = breaker.now()
    states = breaker.states((t.id for t in targets), read_ahead)
    usable = [t for t in targets if not states.get(t.id, breaker.CLOSED).cooling(now)]
    if len(usable) < len(targets):
        tried += [{"target": t.name, "skipped": "breaker_open"} for t in targets if t not in usable]
    if not usable:
        reopen = min(states[t.id].until for t in targets)
        raise CircuitOpen(
            f"Every target of the route {route.name} is failing; the next try is in {math.ceil(reopen - now)} s.",
            headers={"Retry-After": str(max(1, math.ceil(reopen - now)))},
        )
    for target in balancing.order(route, usable):
        state = states.get(target.id, breaker.CLOSED)
        if not state.is_open:
            yield target, False
        else:
            probe = breaker.claim_probe(target.id, hold)
            if probe is None:  # the cache is unreachable: the breaker reads as closed, no probe
                yield target, False
            elif probe:
                yield target, True  # its cooldown is over and this call is the one probe


class Attempts:
    """The attempts of one call, on its route and then on its fallback routes."""

    def __init__(self, call, outgoing: Outgoing):
        self.call = call
        self.outgoing = outgoing
        self.idempotent = outgoing.method not in NON_IDEMPOTENT
        # Each attempt and each target passed over, for the log row's explanation of the call.
        self.tried = call.detail.setdefault("attempts", [])

    def _may_retry(self, route: RouteInfo, error: GatewayError | None) -> bool:
        if error is not None and not error.extra.get("sent", True):
            return True  # the connection failed: the upstream never saw the call
        return self.idempotent or route.retry_non_idempotent

    def _try(self, route: RouteInfo, target: TargetInfo, probe: bool) -> requests.Response:
        """One attempt; the breaker and the in-flight count learn its outcome."""
        call = self.call
        call.attempts += 1
        call.target = target.name
        call.targets_tried.append(target.name)
        attempt = {"target": target.name, "status": None, "error": "", "ms": 0.0, "next": ""}
        self.tried.append(attempt)
        balancing.acquire(target)
        started = time.perf_counter()
        try:
            response = send(route, target, self.outgoing)
        except (UpstreamUnavailable, UpstreamTimeout) as exc:
            attempt["error"] = "timeout" if isinstance(exc, UpstreamTimeout) else "unreachable"
            attempt["ms"] = round((time.perf_counter() - started) * 1000, 1)
            balancing.release(target)
            breaker.record_failure(target.id, target.name, probe)
            raise
        attempt["status"], attempt["ms"] = response.status_code, round((time.perf_counter() - started) * 1000, 1)
        if response.status_code >= 500:
            breaker.record_failure(target.id, target.name, probe)
        else:
            breaker.record_success(target.id, target.name, probe)
        return response

    def on_route(self, route: RouteInfo, can_fall_back: bool) -> requests.Response | None:
        """The answer for the client from this route, or None when the call should fall back.

        Raises the last gateway error when nothing usable answered and the call may not go on.
        """
        hold = route.connect_timeout + route.read_timeout + 1
        candidates = _candidates(route, hold, self.call.read_ahead, self.tried)
        try:
            target, probe = next(candidates, (None, False))
            if target is None:
                raise CircuitOpen(
                    f"No target of the route {route.name} is available now.", headers={"Retry-After": "1"}
                )
        except GatewayError:
            if can_fall_back:
                return None  # nothing was sent: the fallback route may take the call
            raise
        tries = 0
        while True:
            tries += 1
            error = response = None
            try:
                response = self._try(route, target, probe)
            except (UpstreamUnavailable, UpstreamTimeout) as exc:
                error = exc
            if response is not None and response.status_code not in route.retry_statuses:
                return self._keep(target, response)
            wait = retry_after(response) if response is not None else None
            retryable = self._may_retry(route, error) and (wait is None or wait <= MAX_RETRY_AFTER)
            following = next(candidates, None) if retryable and tries < route.max_attempts else None
            if following is None:
                if retryable and can_fall_back:
                    self.tried[-1]["next"] = "fallback"
                    self._discard(target, response)
                    return None
                if error is not None:
                    raise error
                return self._keep(target, response)  # the last upstream answer, as it is
            self.tried[-1]["next"] = "retry_status" if error is None else self.tried[-1]["error"]
            self._discard(target, response)
            pause = max(backoff(tries), wait or 0.0)
            log.info(
                "call %s: retrying after %s from %s", self.call.request_id, error or response.status_code, target.name
            )
            time.sleep(pause)
            target, probe = following

    def _keep(self, target: TargetInfo, response: requests.Response) -> requests.Response:
        """The answer goes to the client: its target stays in flight until the call ends."""
        self.call.held_target = target
        return response

    @staticmethod
    def _discard(target: TargetInfo, response: requests.Response | None) -> None:
        if response is not None:
            response.close()  # an unread answer: its connection is not reused
            balancing.release(target)


def _fallback_of(snapshot: Snapshot, route: RouteInfo, seen: set, path: str) -> RouteInfo | None:
    if route.fallback_id is None or route.fallback_id in seen or len(seen) > MAX_FALLBACK_HOPS:
        return None
    fallback = snapshot.routes_by_id.get(route.fallback_id)
    if fallback is None:
        return None
    if not path_matches(fallback.prefix, path):
        # The fallback's targets take the rest of the path the original route would have sent.
        fallback = dataclasses.replace(fallback, prefix=route.prefix)
    return fallback


def forward(call, snapshot: Snapshot, outgoing: Outgoing) -> requests.Response:
    """The upstream's response to give the client (its body not read yet), for call.route.

    Raises InvalidRequest (400) for a path that could leave the target's base path, before any
    attempt; UpstreamUnavailable (502), UpstreamTimeout (504) or CircuitOpen (503).
    """
    route = call.route
    check_path(route.prefix, outgoing)
    attempts = Attempts(call, outgoing)
    seen = {route.id}
    while True:
        fallback = _fallback_of(snapshot, route, seen, outgoing.path)
        try:
            response = attempts.on_route(route, can_fall_back=fallback is not None)
        except GatewayError as exc:
            if call.fallback_from:  # the gateway's own error answer says where it came from too
                exc.headers = {**exc.headers, "X-Gateway-Fallback": route.name}
            raise
        if response is not None:
            return response
        log.warning("call %s: route %s failed, falling back to %s", call.request_id, route.name, fallback.name)
        call.fallback_from = call.fallback_from or route.name
        call.route = fallback
        seen.add(fallback.id)
        route = fallback
