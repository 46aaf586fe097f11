"""What the dashboard shows of the gateway's live state, read through proxy/state.py: keys near
a limit (the quota counters as the cache holds them now) and targets whose breaker is not closed."""

from datetime import UTC, datetime

from django.db.models import Q

from proxy import state
from routes_admin import durations
from routes_admin.models import APIKey, Limits, UpstreamTarget

NEAR = 0.8  # a key is "near" a limit from 80 % used
MAX_KEYS = 200  # counters are read key by key: the dashboard looks at this many limited keys at most


def keys_near_a_limit() -> list[dict]:
    limited = Q(quota_plan__isnull=False)
    for name in Limits.LIMIT_FIELDS:
        limited |= Q(**{f"{name}__isnull": False})
    keys = APIKey.objects.usable().filter(limited).select_related("quota_plan").order_by("id")[:MAX_KEYS]
    near = []
    for key in keys:
        for quota in state.quota_state(key):
            used = quota.limit - quota.remaining
            if quota.limit and used / quota.limit >= NEAR:
                item = {"key": key, "name": quota.name, "used": used, "limit": quota.limit, "reset": quota.reset}
                near.append(item | {"resets_in": durations.in_words(quota.reset)})
    return sorted(near, key=lambda item: -item["used"] / item["limit"])


def breakers_not_closed() -> list[dict]:
    targets = {target.id: target for target in UpstreamTarget.objects.select_related("route")}
    found = state.breaker_states(targets)
    return [
        {"target": targets[target_id], **described, "until": _moment(described["until"])}
        for target_id, described in sorted(found.items())
        if described["state"] != "closed"
    ]


def _moment(epoch: float | None) -> datetime | None:
    return datetime.fromtimestamp(epoch, UTC) if epoch else None
