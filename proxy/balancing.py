"""In which order a call tries a route's targets: weighted round-robin, least in-flight, failover.

The state (round-robin weights, in-flight counts, in the runtime's `Balancer`) belongs to this process only: each gunicorn
worker balances its own calls. Over many calls and workers the spread still follows the weights;
sharing it through Redis would add a round trip to every call for little gain.
"""

import threading
from collections import defaultdict

from . import runtime
from .config import RouteInfo, TargetInfo


class Balancer:
    """This process's balancing state, in its runtime (proxy/runtime.py)."""

    def __init__(self):
        self.lock = threading.Lock()
        # route id -> {target id: current weight}, nginx's smooth weighted round-robin state.
        self.current: dict[int, dict[int, int]] = defaultdict(dict)
        # target id -> calls of this process now waiting for or reading that target's answer.
        self.inflight: dict[int, int] = defaultdict(int)
        # route id -> calls seen, to rotate ties so idle targets share the load.
        self.turn: dict[int, int] = defaultdict(int)

    def smooth_pick(self, route_id: int, targets: list[TargetInfo]) -> TargetInfo:
        """nginx's smooth weighted round-robin: weights 5,1,1 give a a b a c a a, never a burst of one."""
        with self.lock:
            current = self.current[route_id]
            total = 0
            best = None
            for target in targets:
                weight = max(1, target.weight)
                current[target.id] = current.get(target.id, 0) + weight
                total += weight
                if best is None or current[target.id] > current[best.id]:
                    best = target
            current[best.id] -= total
            return best

    def order(self, route: RouteInfo, targets: list[TargetInfo]) -> list[TargetInfo]:
        """The targets to try, best first, by the route's strategy. `targets` are the eligible ones."""
        if len(targets) <= 1:
            return list(targets)
        if route.strategy == "failover":
            return sorted(targets, key=lambda t: (t.position, t.id))
        if route.strategy == "least_inflight":
            with self.lock:
                turn = self.turn[route.id] = self.turn[route.id] + 1
                start = turn % len(targets)
                rotated = targets[start:] + targets[:start]
                # Load relative to weight: a target of weight 2 takes twice the calls of one of weight 1.
                inflight = self.inflight
                return sorted(rotated, key=lambda t: inflight[t.id] / max(1, t.weight))
        return _rotated(targets, self.smooth_pick(route.id, targets))

    def acquire(self, target: TargetInfo) -> None:
        with self.lock:
            self.inflight[target.id] += 1

    def release(self, target: TargetInfo) -> None:
        with self.lock:
            self.inflight[target.id] = max(0, self.inflight[target.id] - 1)


def _rotated(targets: list[TargetInfo], first: TargetInfo) -> list[TargetInfo]:
    """The targets in their configured order, starting with `first`: the order of retries."""
    index = targets.index(first)
    return targets[index:] + targets[:index]


def smooth_pick(route_id: int, targets: list[TargetInfo]) -> TargetInfo:
    return runtime.current().balancer.smooth_pick(route_id, targets)


def order(route: RouteInfo, targets: list[TargetInfo]) -> list[TargetInfo]:
    return runtime.current().balancer.order(route, targets)


def acquire(target: TargetInfo) -> None:
    runtime.current().balancer.acquire(target)


def release(target: TargetInfo) -> None:
    runtime.current().balancer.release(target)


def inflight(target: TargetInfo) -> int:
    return runtime.current().balancer.inflight.get(target.id, 0)


def reset() -> None:
    """Forget this process's balancing state (tests, where target ids are reused)."""
    runtime.current().balancer = Balancer()
