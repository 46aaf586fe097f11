"""The IETF RateLimit headers (draft-ietf-httpapi-ratelimit-headers), structured-field form.

    RateLimit-Policy: "requests_per_minute";q=100;w=60, "tokens_per_day";q=50000;w=86400;qu="tokens"
    RateLimit: "requests_per_minute";r=42;t=30, "tokens_per_day";r=1200;t=3600

Each configured limit is one list member named after the limit: q is the quota, w the window in
seconds, r what remains and t the seconds until the window resets.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class Quota:
    """One limit as it stands for this call."""

    name: str  # "requests_per_minute", "route_tokens_per_day", "max_concurrent", ...
    limit: int
    remaining: int
    reset: int  # seconds until the window resets
    window: int | None = None  # seconds; None for the concurrency cap
    unit: str = ""  # "" (requests), "tokens" or "concurrent-requests"


def _policy(quota: Quota) -> str:
    item = f'"{quota.name}";q={quota.limit}'
    if quota.window:
        item += f";w={quota.window}"
    if quota.unit:
        item += f';qu="{quota.unit}"'
    return item


def _state(quota: Quota) -> str:
    item = f'"{quota.name}";r={max(0, quota.remaining)}'
    if quota.window:  # a concurrency slot has no reset time: it frees when a call ends
        item += f";t={max(0, quota.reset)}"
    return item


def headers(quotas: list[Quota]) -> dict[str, str]:
    """RateLimit-Policy and RateLimit for these limits; nothing when there are none."""
    if not quotas:
        return {}
    return {
        "RateLimit-Policy": ", ".join(_policy(q) for q in quotas),
        "RateLimit": ", ".join(_state(q) for q in quotas),
    }


def refusal_headers(quotas: list[Quota], refused: Quota) -> dict[str, str]:
    """The headers of a 429: Retry-After (RFC 9110 section 10.2.3) plus the RateLimit pair."""
    return {"Retry-After": str(max(1, refused.reset)), **headers(quotas)}
