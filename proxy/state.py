"""The proxy's live state, for the back office (admin, console, management API): the one module
they import from the proxy. Quota counters, budget counters and breaker states live in the shared cache."""

from . import breaker, budgets, quotas
from .ratelimit_headers import Quota


def quota_state(key) -> list[Quota]:
    """A key's own limits as the cache counts them now; consumes nothing. `key` is an APIKey."""
    return quotas.live_state(key)


def team_quota_state(team) -> list[Quota]:
    """A team's limits as the cache counts them now (all its keys together). `team` is a Team."""
    return quotas.team_live_state(team)


def budget_state(kind: str, owner) -> list[dict]:
    """A key's, team's or route's budgets as the live counters hold them now: spent (None: no
    counter this period), held by calls in flight. `kind` is "key", "team" or "route"."""
    return budgets.live_state(kind, owner)


def reset_quotas(key, routes=()) -> dict:
    """Forget a key's current windows and counters (and those on the given capped routes); returns
    what its deleted usage rows held."""
    return quotas.reset_counters(key, routes)


def breaker_states(target_ids) -> dict[int, dict]:
    """Each target's breaker: state, failures in the window, opened and until (wall clock)."""
    return breaker.describe(target_ids)


def reset_breaker(target_id: int) -> None:
    breaker.reset(target_id)
