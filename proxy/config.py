"""Each process's in-memory copy of routes and keys, so a call costs no database query.

After a change to routes, targets, keys or plans commits, the ConfigGeneration row in the
database is bumped (proxy/signals.py). Every process reads that row at most every
GATEWAY_CONFIG_TTL seconds (one primary-key query, made by one call while the others go on) and
reloads its copy when it moved, so a change made by any process, an admin, a management command
or another instance, with or without Redis, is served everywhere within GATEWAY_CONFIG_TTL plus
the reload. The generation is read before the rows it labels: a change committed during a reload
only causes another reload, never an old copy kept under the new generation.

When the database cannot be reached, the process keeps serving from its last good copy (stale
since the failed check, shown by /readyz) and checks again every GATEWAY_CONFIG_TTL, waiting at
most GATEWAY_CONFIG_DB_TIMEOUT for a connection; a key it has not looked up yet gets a 503
(ConfigUnavailable) instead of a wait.
"""

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime

from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.db.models import Q
from django.utils import timezone

from routes_admin.models import APIKey, ConfigGeneration, ModelPrice, Route, Team, split_list
from routes_admin.pricing import DEFAULT_MAX_TOKENS, Price, PriceList, parse_thresholds

from . import database, runtime
from .errors import ConfigUnavailable

log = logging.getLogger(__name__)
MAX_CACHED_KEYS = 100_000
DATABASE_DOWN = (OperationalError, InterfaceError)


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
    processing_mode: str = "sync"  # sync, async or sync-only (routes_admin.models.ProcessingMode)
    max_concurrent_jobs: int | None = None  # cap on this route's running jobs (jobs/)
    budgets: dict = field(default_factory=dict)  # budget_per_day / budget_per_month set on the route
    default_max_tokens: int = 1000  # output a budget reserves when a call sets no max_tokens
    alert_thresholds: tuple = ()  # percentages of its budgets that send an alert (proxy/budgets.py)

    @property
    def conditions(self) -> int:
        """How specific the route is: at equal prefix and priority, more conditions are tried first
        (each header, each body field, and the model list count one)."""
        return len(self.match_headers) + len(self.match_body) + (1 if self.models else 0)

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
    grace_ends: datetime | None = None  # set for a secret replaced by a rotation: refused from then on
    budgets: dict = field(default_factory=dict)  # the key's own budgets that are set
    team_id: int | None = None
    team_name: str = ""
    team_budgets: dict = field(default_factory=dict)  # its team's budgets, shared by the team's keys
    team_limits: dict = field(default_factory=dict)  # its team's call limits that are set, counted per team
    alert_thresholds: tuple = ()  # percentages of the key's budgets that send an alert
    team_alert_thresholds: tuple = ()  # and of its team's
    # The budget counters of its calls, per route, made once a day (proxy/budgets.py counters_for).
    budget_counters: dict = field(default_factory=dict, repr=False, compare=False)

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
        processing_mode=route.processing_mode,
        max_concurrent_jobs=route.max_concurrent_jobs,
        budgets=_budgets(route),
        default_max_tokens=route.default_max_tokens or DEFAULT_MAX_TOKENS,
        alert_thresholds=_thresholds(route),
    )


def _budgets(owner) -> dict:
    return {name: getattr(owner, name) for name in owner.BUDGET_FIELDS if getattr(owner, name) is not None}


def _thresholds(owner) -> tuple:
    """The owner's alert thresholds, else the gateway's default; none without a budget."""
    if not _budgets(owner):
        return ()
    own = parse_thresholds(owner.alert_thresholds)
    return own if own is not None else parse_thresholds(settings.GATEWAY_BUDGET_ALERT_THRESHOLDS) or ()


def _team_limits(team) -> dict:
    return {name: getattr(team, name) for name in Team.LIMIT_FIELDS if getattr(team, name) is not None}


def _key_info(key: APIKey, prefix: str | None = None) -> KeyInfo:
    previous = prefix is not None and prefix != key.prefix  # a secret a rotation replaced, found by its old prefix
    prefix = prefix or key.prefix
    return KeyInfo(
        id=key.id,
        name=key.name,
        prefix=prefix,
        hashed_secret=key.previous_hashed_secret if previous else key.hashed_secret,
        enabled=key.enabled,
        expires=key.expires,
        revoked=key.revoked,
        all_routes=key.all_routes,
        route_ids=frozenset(r.id for r in key.routes.all()),
        limits=key.effective_limits(),
        grace_ends=key.previous_expires if previous else None,
        budgets=_budgets(key),
        team_id=key.team_id,
        team_name=key.team.name if key.team_id else "",
        team_budgets=_budgets(key.team) if key.team_id else {},
        team_limits=_team_limits(key.team) if key.team_id else {},
        alert_thresholds=_thresholds(key),
        team_alert_thresholds=_thresholds(key.team) if key.team_id else (),
    )


class Snapshot:
    """Routes (all loaded at once) and keys (loaded on first use) of one configuration generation."""

    def __init__(self, generation, source: "ConfigCache | None" = None):
        self.generation = generation
        self.source = source  # the copy keeper that loaded it: whether the database is known down
        self.loaded = time.monotonic()
        routes = Route.objects.enabled().select_related("quota_plan").prefetch_related("targets")
        self.routes: list[RouteInfo] = sorted(
            (_route_info(r) for r in routes), key=lambda r: (-len(r.prefix), -r.priority, -r.conditions, r.name)
        )
        self.routes_by_id = {r.id: r for r in self.routes}
        self.prices = PriceList(
            Price(p.id, p.model, p.target_id, p.input_per_million, p.output_per_million, p.per_call, p.valid_from)
            for p in ModelPrice.objects.all()
        )
        self._keys: dict[str, KeyInfo | None] = {}

    def key(self, prefix: str) -> KeyInfo | None:
        try:
            return self._keys[prefix]
        except KeyError:
            pass
        source = self.source
        if source is not None and source.stale_since is not None:  # the database is known to be down: no wait, no guess
            raise ConfigUnavailable("The gateway cannot reach its database to check this API key; try again shortly.")
        try:
            database.connect(settings.GATEWAY_CONFIG_DB_TIMEOUT)
            keys = APIKey.objects.select_related("quota_plan", "team").prefetch_related("routes")
            key = keys.filter(Q(prefix=prefix) | Q(previous_prefix=prefix)).first()
        except DATABASE_DOWN as exc:
            if source is not None:
                source.database_down(exc)
            raise ConfigUnavailable(
                "The gateway cannot reach its database to check this API key; try again shortly."
            ) from exc
        info = _key_info(key, prefix) if key else None
        if len(self._keys) >= MAX_CACHED_KEYS:  # unknown prefixes sent at random must not grow memory
            self._keys.clear()
        self._keys[prefix] = info
        return info

    def key_by_id(self, key_id: int) -> KeyInfo | None:
        """The key as the database has it now, for the job worker (a job names its key by id)."""
        key = APIKey.objects.select_related("quota_plan", "team").prefetch_related("routes").filter(id=key_id).first()
        return _key_info(key) if key else None


class ConfigCache:
    """This process's copy of the configuration (in the runtime, proxy/runtime.py): checked
    against the database's generation at most once per GATEWAY_CONFIG_TTL, and served as it is
    while the database is away."""

    def __init__(self):
        self.lock = threading.Lock()
        self.snapshot: Snapshot | None = None
        self.checked_at = 0.0
        self.stale_since: datetime | None = None  # when a check first failed to reach the database

    def database_down(self, exc: Exception) -> None:
        if self.stale_since is None:
            self.stale_since = timezone.now()
            log.error("database unreachable: serving the last configuration loaded, new keys get 503 (%r)", exc)

    def current(self) -> Snapshot:
        """The configuration to serve this call with."""
        snapshot = self.snapshot
        if snapshot is not None and time.monotonic() - self.checked_at < settings.GATEWAY_CONFIG_TTL:
            return snapshot
        # One call checks at a time; meanwhile the others are served from the copy in hand.
        if not self.lock.acquire(blocking=snapshot is None):
            return snapshot
        try:
            snapshot = self.snapshot
            if snapshot is not None and time.monotonic() - self.checked_at < settings.GATEWAY_CONFIG_TTL:
                return snapshot
            try:
                database.connect(settings.GATEWAY_CONFIG_DB_TIMEOUT)
                generation = ConfigGeneration.objects.current()  # before the rows: see the docstring
                if snapshot is None or generation != snapshot.generation:
                    snapshot = self.snapshot = Snapshot(generation, self)
            except DATABASE_DOWN as exc:
                if snapshot is None:
                    raise ConfigUnavailable() from exc
                self.database_down(exc)
            else:
                if self.stale_since is not None:
                    log.warning("database reachable again: configuration checked")
                    self.stale_since = None
            self.checked_at = time.monotonic()
            return snapshot
        finally:
            self.lock.release()

    def state(self) -> str:
        """For /readyz: "ok", "stale since <time>" (serving the last good copy) or "unavailable"."""
        try:
            self.current()
        except ConfigUnavailable:
            return "unavailable"
        stale_since = self.stale_since
        return "ok" if stale_since is None else f"stale since {stale_since.isoformat(timespec='seconds')}"

    def invalidate(self) -> None:
        """Forget this copy: the next call reloads it. The other processes are not told."""
        self.snapshot = None


def current() -> Snapshot:
    """The configuration to serve this call with (this process's runtime's copy)."""
    return runtime.current().config.current()


def state() -> str:
    """For /readyz: "ok", "stale since <time>" (serving the last good copy) or "unavailable"."""
    return runtime.current().config.state()


def invalidate() -> None:
    """Forget this process's copy: its next call reloads it. The other processes are not told."""
    runtime.current().config.invalidate()


def announce_change() -> None:
    """Tell every process, this one included, that the configuration changed. Only after it commits."""
    try:
        ConfigGeneration.objects.bump()
    except DATABASE_DOWN:
        log.exception("could not announce a configuration change: other processes see it with the next one")
    invalidate()
