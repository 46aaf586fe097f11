"""A call explained in plain words, from what its log row recorded (RequestLog.detail and fields).

`explain(row)` returns the steps the call went through (key, route, limits, each target) and one
sentence saying why it ended as it did, for example "refused: requests_per_minute 60/60, resets
in 14 s" or "demo-a timed out after 5.0 s, retried on demo-b, answered 200 in 812 ms". It says
only what was recorded: a row from before the gateway recorded `detail` gets the plain fields.
"""

from dataclasses import dataclass, field

from django.conf import settings

from routes_admin import pricing
from routes_admin.models import ErrorType

AUTH_WORDS = {
    "missing": "no API key was sent",
    "unknown": "the API key is not known",
    "revoked": "the API key was revoked",
    "disabled": "the API key is disabled",
    "expired": "the API key has expired",
    "route_not_allowed": "the API key may not call this route",
}
SKIP_WORDS = {
    "breaker_open": "skipped: its circuit breaker was open",
    "not_allowed": "passed over: not a target this call may use",
}


@dataclass
class Explanation:
    outcome: str  # why the call ended as it did, in one sentence
    steps: list[tuple[str, str]] = field(default_factory=list)  # (step, what happened)


def _seconds_or_ms(ms: float) -> str:
    return f"{ms / 1000:.1f} s" if ms >= 1000 else f"{ms:.0f} ms"


def _attempt_outcome(attempt: dict) -> str:
    if attempt.get("skipped"):
        return SKIP_WORDS.get(attempt["skipped"], f"skipped ({attempt['skipped']})")
    ms = attempt.get("ms") or 0
    if attempt.get("error") == "timeout":
        return f"timed out after {_seconds_or_ms(ms)}"
    if attempt.get("error") == "unreachable":
        return f"could not be reached ({_seconds_or_ms(ms)})"
    if attempt.get("status") is None:
        return "gave no answer"
    return f"answered {attempt['status']} in {_seconds_or_ms(ms)}"


def _next_words(attempt: dict, row) -> str:
    reason = attempt.get("next") or ""
    if reason == "retry_status":
        return f"status {attempt.get('status')} is one the route retries"
    if reason in ("timeout", "unreachable"):
        return "a failed connection is retried on the next target"
    if reason == "fallback":
        return f"every target of {row.fallback_from or 'the route'} failed: the fallback route took the call"
    return ""


def attempts_sentence(attempts: list, row) -> str:
    """'demo-a timed out after 5.0 s, retried on demo-b, answered 200 in 812 ms'."""
    parts = []
    previous = None
    for attempt in attempts:
        name = attempt.get("target") or "?"
        outcome = _attempt_outcome(attempt)
        if attempt.get("skipped") or previous is None:
            parts.append(f"{name} {outcome}")
        elif previous.get("next") == "fallback":
            parts.append(f"fell back to {name} (route {row.route_name}), {outcome}")
        else:
            parts.append(f"retried on {name}, {outcome}")
        if not attempt.get("skipped"):
            previous = attempt
    return ", ".join(parts)


def _amount(text) -> str:
    """A stored amount as people write it (0.019800000000 -> 0.0198); as it is when not a number."""
    try:
        return pricing.plain(text)
    except (ArithmeticError, TypeError, ValueError):
        return str(text)


def _quota_sentence(quota: dict) -> str:
    name = quota.get("name") or ""
    if "budget" in quota:  # a budget in money (proxy/budgets.py)
        reserved = quota.get("reserved_by_others") or "0"
        spent, budget = _amount(quota.get("spent")), _amount(quota["budget"])
        text = f"{name} {spent} of {budget} {quota.get('currency', '')} spent"
        if pricing.parse_money(reserved, places=pricing.COST_PLACES, digits=pricing.COST_DIGITS):
            text += f" + {_amount(reserved)} reserved by calls in flight"
        return text + f", resets in {quota.get('reset')} s"
    text = f"{name} {quota.get('used')}/{quota.get('limit')}"
    if "requests_per_" in name:
        text += " (counting this call)"  # a request window counts the call it refuses (README, Quotas)
    if quota.get("reset") is not None and quota.get("name") != "max_concurrent":
        text += f", resets in {quota['reset']} s"
    return text


def explain(row) -> Explanation:
    detail = row.detail or {}
    steps: list[tuple[str, str]] = []
    auth = detail.get("auth")
    if auth:
        steps.append(("Key", f"refused: {AUTH_WORDS.get(auth, auth)}"))
    elif row.key_prefix:
        key = row.api_key if row.api_key_id else None
        who = f"{key.name} (gw_{row.key_prefix}_…)" if key else f"gw_{row.key_prefix}_…"
        steps.append(("Key", f"{who} accepted"))

    if detail.get("match"):
        match = detail["match"]
        if row.model and ", model" in match:
            match = match.replace(", model", f", model {row.model}", 1)
        steps.append(("Route", f"matched {match}"))
    elif row.status in (404, 405) and detail.get("why"):
        steps.append(("Route", f"none: {detail['why']}"))
    elif row.route_name:
        steps.append(("Route", f"{row.route_name}"))
    if row.model and row.upstream_model and row.upstream_model != row.model:
        steps.append(("Model", f"{row.model} was sent upstream as {row.upstream_model} (the target's alias)"))

    quota = detail.get("quota")
    if quota:
        steps.append(("Limits", f"refused by {_quota_sentence(quota)}"))
    elif row.limit:
        steps.append(("Limits", f"refused by {row.limit}"))
    elif row.status and row.status not in (401, 403, 404, 405) and row.key_prefix:
        steps.append(("Limits", "none of the key's limits refused it"))

    attempts = detail.get("attempts") or []
    for attempt in attempts:
        words = _attempt_outcome(attempt)
        then = _next_words(attempt, row)
        steps.append((f"Target {attempt.get('target') or '?'}", f"{words}; {then}" if then else words))

    if row.model or row.cost is not None:
        steps.append(("Cost", cost_sentence(row)))
    for crossing in detail.get("budget_alerts") or ():
        steps.append(("Budget alert", alert_sentence(crossing)))

    # The page ends the sentence itself: a message that already ends with one would double it.
    return Explanation(outcome=_outcome(row, detail, attempts).rstrip(" ."), steps=steps)


def _outcome(row, detail: dict, attempts: list) -> str:
    total = _seconds_or_ms(row.latency_ms)
    if detail.get("auth"):
        return f"refused with {row.status}: {AUTH_WORDS.get(detail['auth'], detail['auth'])}"
    if row.status == 429 and detail.get("quota"):
        return f"refused: {_quota_sentence(detail['quota'])}"
    if row.status == 0:
        return f"the client went away after {total}, before the answer ended"
    tried = attempts_sentence(attempts, row)
    if row.error_type == ErrorType.CLIENT_DISCONNECTED:
        before = f"{tried}, then " if tried else ""
        return f"{before}the client disconnected after {total}, before the answer ended"
    if row.error_type and not (200 <= row.status < 400):
        why = (detail.get("why") or row.error_type).rstrip(" .")
        if row.status == 413 and row.route_name:
            why += f" (route {row.route_name})"
        return f"{tried}: failed with {row.status}, {why}" if tried else f"refused with {row.status}: {why}"
    if tried:
        ending = f"; the whole call took {total}" if row.streamed or len(attempts) > 1 else ""
        return tried + ending
    return f"answered {row.status} in {total}"


def cost_sentence(row) -> str:
    """ "812 in × 0.15/M + 96 out × 0.6/M = 0.0001794 USD", or "no price"."""
    detail = (row.detail or {}).get("cost")
    text = pricing.explain(detail, row.prompt_tokens, row.completion_tokens, row.cost, settings.GATEWAY_CURRENCY)
    if row.cost is None and detail and detail.get("why"):
        text += f" ({detail['why']})"
    if row.cost is not None and row.usage_estimated:
        text += " (estimated: the answer was cut before the upstream reported its usage)"
    return text


def alert_sentence(crossing: dict) -> str:
    """ "its cost carried the team acme's spend to 8.1 USD, past 80 % of its daily budget of 10 USD"."""
    try:
        period = "daily" if crossing["budget"] == "budget_per_day" else "monthly"
        currency = settings.GATEWAY_CURRENCY
        return (
            f"its cost carried the {crossing['scope']} {crossing['owner_name']}'s spend to "
            f"{pricing.plain(crossing['spent'])} {currency}, past {crossing['threshold']} % of its {period} "
            f"budget of {pricing.plain(crossing['amount'])} {currency}"
        )
    except (KeyError, TypeError, ValueError, ArithmeticError):
        return "its cost crossed a budget's alert threshold"
