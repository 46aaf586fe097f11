"""Which target serves a call, and what happens when it fails."""

import random

from .errors import GatewayError, UpstreamUnavailable
from .forwarding import Outgoing, send


def forward(call, route, outgoing: Outgoing):
    """The upstream's response from the first target that answers."""
    if not route.targets:
        raise UpstreamUnavailable(f"The route {route.name} has no enabled target.")
    targets = list(route.targets)
    random.shuffle(targets)
    error: GatewayError | None = None
    for target in targets[: route.max_attempts]:
        call.target = target.name
        call.targets_tried.append(target.name)
        call.attempts += 1
        try:
            return send(route, target, outgoing)
        except UpstreamUnavailable as exc:
            error = exc
    raise error
