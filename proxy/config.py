"""Each process's in-memory copy of routes and keys, so a call costs no database query.

A change saved anywhere bumps a generation number in the shared cache (see
routes_admin/signals.py); every process compares it at most every GATEWAY_CONFIG_TTL seconds and
reloads when it moved. A change made in this process is seen at once.
"""

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime

from django.conf import settings
from django.core.cache import cache

from routes_admin.models import APIKey, Route, split_list

log = logging.getLogger(__name__)
GENERATION_KEY = "config:generation"
MAX_CACHED_KEYS = 100_000
# Reloaded at least this often even when no change was announced: without Redis, a change saved
# by another process (a management command, a second admin process) has nobody to announce it.
MAX_AGE = 30.0


@dataclass(frozen=True)
class TargetInfo:
    id: int
    name: str
    url: str
    weight: int
    position: int
    credential_header: str
    credential_value: str = field(repr=False)
    model_aliases: dict


@dataclass(frozen=True)
class RouteInfo:
    id: int
    name: str
    prefix: str
    methods: frozenset  # empty: any method
    models: frozenset  # empty: any model
    match_headers: dict
    match_body: dict
    priority: int
    strategy: str
    connect_timeout: float
    read_timeout: float
    max_body_bytes: int
    max_attempts: int
    retry_statuses: frozenset
    retry_non_idempotent: bool
    fallback_id: int | None
    limits: dict  # the route's cap, from its quota plan
    targets: tuple  # enabled TargetInfo, in failover order

    @property
    def needs_body(self) -> bool:
        return bool(self.models or self.match_body)

    def allows(self, method: str) -> bool:
        return not self.methods or method in self.methods


@dataclass(frozen=True)
class KeyInfo:
    id: int
    name: str
    prefix: str
    hashed_secret: str = field(repr=False)
    enabled: bool
    expires: datetime | None
    revoked: datetime | None
    all_routes: bool
    route_ids: frozenset
    limits: dict

    def may_call(self, route: RouteInfo) -> bool:
        return self.all_routes or route.id in self.route_ids


def _route_info(route: Route) -> RouteInfo:
    plan = route.quota_plan
    return RouteInfo(
        id=route.id,
        name=route.name,
        prefix=route.path_prefix.rstrip("/"),
        methods=frozenset(route.method_list),
        models=frozenset(route.model_list),
        match_headers=dict(route.match_headers or {}),
        match_body=dict(route.match_body or {}),
        priority=route.priority,
        strategy=route.strategy,
        connect_timeout=route.connect_timeout,
        read_timeout=route.read_timeout,
        max_body_bytes=route.max_body_bytes,
        max_attempts=max(1, route.max_attempts),
        retry_statuses=frozenset(int(s) for s in split_list(route.retry_statuses) if s.isdigit()),
        retry_non_idempotent=route.retry_non_idempotent,
        fallback_id=route.fallback_id,
        limits={f: getattr(plan, f) for f in plan.LIMIT_FIELDS} if plan else {},
        targets=tuple(
            TargetInfo(
                id=t.id,
                name=t.name,
                url=t.url.rstrip("/"),
                weight=t.weight,
                position=t.position,
                credential_header=t.credential_header,
                credential_value=t.credential_value,
                model_aliases=dict(t.model_aliases or {}),
            )
            for t in route.targets.all()
            if t.enabled
        ),
    )


def _key_info(key: APIKey) -> KeyInfo:
    return KeyInfo(
        id=key.id,
        name=key.name,
        prefix=key.prefix,
        hashed_secret=key.hashed_secret,
        enabled=key.enabled,
        expires=key.expires,
        revoked=key.revoked,
        all_routes=key.all_routes,
        route_ids=frozenset(r.id for r in key.routes.all()),
        limits=key.effective_limits(),
    )


class Snapshot:
    """Routes (all loaded at once) and keys (loaded on first use) of one configuration generation."""

    def __init__(self, generation):
        self.generation = generation
        self.loaded = time.monotonic()
        routes = Route.objects.enabled().select_related("quota_plan").prefetch_related("targets")
        self.routes: list[RouteInfo] = sorted(
            (_route_info(r) for r in routes), key=lambda r: (-len(r.prefix), -r.priority, r.name)
        )
        self.routes_by_id = {r.id: r for r in self.routes}
        self._keys: dict[str, KeyInfo | None] = {}

    def key(self, prefix: str) -> KeyInfo | None:
        try:
            return self._keys[prefix]
        except KeyError:
            pass
        key = APIKey.objects.select_related("quota_plan").prefetch_related("routes").filter(prefix=prefix).first()
        info = _key_info(key) if key else None
        if len(self._keys) >= MAX_CACHED_KEYS:  # unknown prefixes sent at random must not grow memory
            self._keys.clear()
        self._keys[prefix] = info
        return info

    def key_by_id(self, key_id: int) -> KeyInfo | None:
        """The key as the database has it now, for the job worker (a job names its key by id)."""
        key = APIKey.objects.select_related("quota_plan").prefetch_related("routes").filter(id=key_id).first()
        return _key_info(key) if key else None


_lock = threading.Lock()
_snapshot: Snapshot | None = None
_checked_at = 0.0


def _shared_generation():
    try:
        return cache.get(GENERATION_KEY)
    except Exception:  # the cache being down must not stop the gateway from reading its config
        log.warning("cache unreachable while checking the configuration generation", exc_info=True)
        return _snapshot.generation if _snapshot else None


def current() -> Snapshot:
    """The configuration to serve this call with."""
    global _snapshot, _checked_at
    now = time.monotonic()
    snapshot = _snapshot
    if snapshot is not None and now - _checked_at < settings.GATEWAY_CONFIG_TTL:
        return snapshot
    generation = _shared_generation()
    if snapshot is None or generation != snapshot.generation or now - snapshot.loaded > MAX_AGE:
        with _lock:
            if _snapshot is None or _snapshot.generation != generation or now - _snapshot.loaded > MAX_AGE:
                _snapshot = Snapshot(generation)
            snapshot = _snapshot
    _checked_at = now
    return snapshot


def invalidate() -> None:
    """Forget this process's copy and tell the other processes to drop theirs."""
    global _snapshot
    _snapshot = None
    try:
        cache.set(GENERATION_KEY, time.time_ns(), timeout=None)
    except Exception:
        log.warning("cache unreachable: other gateway processes see this change after a restart", exc_info=True)
