"""What admins configure (routes, targets, keys, quota plans) and what the gateway records."""

from datetime import timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone

from . import keys
from .callbacks import check_alert_webhook
from .pricing import (
    BUDGET_DIGITS,
    BUDGET_PLACES,
    COST_DIGITS,
    COST_PLACES,
    PRICE_DIGITS,
    PRICE_PLACES,
    check_alert_emails,
    check_alert_thresholds,
    check_budget,
    check_price,
)
from .validators import check_credential, check_target_url, default_target_name

# The gateway's own paths, defined here once: the URL conf sends everything else to the proxy, and
# no route may claim them. Areas are reserved with everything below them; endpoints exactly.
RESERVED_AREAS = ("admin", "api", "console", "jobs", "static")
RESERVED_ENDPOINTS = ("healthz", "readyz", "metrics")
RESERVED_PREFIXES = tuple(f"/{name}" for name in RESERVED_AREAS + RESERVED_ENDPOINTS)
DEFAULT_RETRY_STATUSES = "429,502,503,504"


def split_list(text: str) -> list[str]:
    """Items of a comma- or newline-separated admin field, blanks dropped."""
    return [item.strip() for item in text.replace("\n", ",").split(",") if item.strip()]


class CallLimits(models.Model):
    """Limits on calls: requests per window, tokens per calendar period, calls at once. Empty: no limit."""

    requests_per_minute = models.PositiveIntegerField(null=True, blank=True)
    requests_per_hour = models.PositiveIntegerField(null=True, blank=True)
    requests_per_day = models.PositiveIntegerField(null=True, blank=True)
    tokens_per_day = models.PositiveBigIntegerField(null=True, blank=True)
    tokens_per_month = models.PositiveBigIntegerField(null=True, blank=True)
    max_concurrent = models.PositiveIntegerField(null=True, blank=True, help_text="Requests in flight at once.")

    LIMIT_FIELDS = (
        "requests_per_minute",
        "requests_per_hour",
        "requests_per_day",
        "tokens_per_day",
        "tokens_per_month",
        "max_concurrent",
    )

    class Meta:
        abstract = True


class Limits(CallLimits):
    """Quota limits of a key or a plan: the call limits, and the queued jobs a key may have."""

    # Counted per key (jobs/submission.py); empty: GATEWAY_JOB_MAX_QUEUED. Not a route cap.
    max_queued_jobs = models.PositiveIntegerField(
        null=True, blank=True, help_text="Jobs waiting or running at once, per key (empty: the gateway's default)."
    )

    LIMIT_FIELDS = (*CallLimits.LIMIT_FIELDS, "max_queued_jobs")

    class Meta:
        abstract = True


class Budgets(models.Model):
    """Budgets in money (GATEWAY_CURRENCY) per calendar day and month (TIME_ZONE); empty: none."""

    budget_per_day = models.DecimalField(
        max_digits=BUDGET_DIGITS, decimal_places=BUDGET_PLACES, null=True, blank=True, validators=[check_budget]
    )
    budget_per_month = models.DecimalField(
        max_digits=BUDGET_DIGITS, decimal_places=BUDGET_PLACES, null=True, blank=True, validators=[check_budget]
    )

    # Alerts when a period's spend crosses these percentages of a budget (budgets/alerts: proxy/budgets.py).
    alert_thresholds = models.CharField(
        max_length=100,
        blank=True,
        validators=[check_alert_thresholds],
        help_text="Percentages of each budget that send an alert, e.g. 50,80,100. Empty: the gateway's default "
        "(GATEWAY_BUDGET_ALERT_THRESHOLDS); none: no alerts.",
    )
    # Where its alerts go (jobs/alerts.py): each set one replaces the gateway's for that channel.
    alert_webhook = models.CharField(
        max_length=2000,
        blank=True,
        validators=[check_alert_webhook],
        help_text="URL its budget alerts are POSTed to, signed; on GATEWAY_WEBHOOK_HOSTS. Empty: the gateway's "
        "(GATEWAY_BUDGET_ALERT_WEBHOOK).",
    )
    alert_emails = models.CharField(
        max_length=500,
        blank=True,
        validators=[check_alert_emails],
        help_text="Addresses its budget alerts are emailed to, comma-separated. Empty: the gateway's "
        "(GATEWAY_BUDGET_ALERT_EMAILS).",
    )

    BUDGET_FIELDS = ("budget_per_day", "budget_per_month")
    ALERT_FIELDS = ("alert_thresholds", "alert_webhook", "alert_emails")
    SPEND_FIELDS = (*BUDGET_FIELDS, *ALERT_FIELDS)

    class Meta:
        abstract = True


class Team(CallLimits, Budgets):
    """Keys grouped for spending and limits: the team's limits and budgets hold across all its keys
    together (counted per team, not per key)."""

    name = models.CharField(max_length=100, unique=True)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class QuotaPlan(Limits):
    name = models.CharField(max_length=100, unique=True)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class RouteQuerySet(models.QuerySet):
    def enabled(self):
        return self.filter(enabled=True)


class ProcessingMode(models.TextChoices):
    SYNC = "sync", "sync (jobs on request)"
    ASYNC = "async", "async (every call is a job)"
    SYNC_ONLY = "sync-only", "sync only (no jobs)"


class Route(Budgets):
    class Strategy(models.TextChoices):
        WEIGHTED = "weighted", "Weighted round-robin"
        LEAST_INFLIGHT = "least_inflight", "Least in-flight requests"
        FAILOVER = "failover", "Ordered failover"

    name = models.CharField(max_length=100, unique=True)
    path_prefix = models.CharField(
        max_length=200,
        help_text="Public path prefix, e.g. /v1. The rest of the path is appended to the target URL.",
    )
    methods = models.CharField(
        max_length=100, default="GET,POST", blank=True, help_text="Comma-separated; empty allows every method."
    )
    model_names = models.TextField(
        blank=True,
        help_text="Optional: public model names (comma or newline separated) matched against the body's model.",
    )
    match_headers = models.JSONField(
        default=dict,
        blank=True,
        help_text='Optional: headers that must be present, e.g. {"X-Tenant": "acme"}; "*" matches any value.',
    )
    match_body = models.JSONField(
        default=dict,
        blank=True,
        help_text='Optional: JSON body fields that must match, e.g. {"stream": true}; dotted paths allowed.',
    )
    priority = models.IntegerField(default=0, help_text="Higher wins when several routes match the same prefix.")
    strategy = models.CharField(max_length=20, choices=Strategy.choices, default=Strategy.WEIGHTED)
    connect_timeout = models.FloatField(default=5.0, validators=[MinValueValidator(0.01)], help_text="Seconds.")
    read_timeout = models.FloatField(
        default=300.0, validators=[MinValueValidator(0.01)], help_text="Seconds to wait for each piece of the answer."
    )
    max_body_bytes = models.PositiveIntegerField(default=10 * 1024 * 1024)
    max_attempts = models.PositiveSmallIntegerField(default=3, validators=[MinValueValidator(1)])
    retry_statuses = models.CharField(max_length=100, default=DEFAULT_RETRY_STATUSES, blank=True)
    retry_non_idempotent = models.BooleanField(
        default=False, help_text="Retry POST and PATCH calls too (safe for most AI completions)."
    )
    fallback = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="fallback_for",
        help_text="Route that takes the call when every target of this one failed.",
    )
    quota_plan = models.ForeignKey(
        QuotaPlan,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="routes",
        help_text="Optional cap that applies to every key on this route.",
    )
    processing_mode = models.CharField(
        max_length=10,
        choices=ProcessingMode.choices,
        default=ProcessingMode.SYNC,
        help_text="sync: a call becomes a job only with Prefer: respond-async; async: every call is a job; "
        "sync-only: that header is refused.",
    )
    max_concurrent_jobs = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1)],
        help_text="Jobs of this route running at once, across all workers; more wait in the queue. Empty: no cap.",
    )
    default_max_tokens = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Output tokens a budget reserves for a call that sets no max_tokens (settled to the real cost "
        "when it ends). Empty: 1000.",
    )
    enabled = models.BooleanField(default=True)
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)

    # What an admin sets on a route, in the order people read it: the management API and the
    # configuration file (export_config / apply_config) both serve exactly these.
    SETTINGS = (
        "name",
        "enabled",
        "path_prefix",
        "methods",
        "model_names",
        "match_headers",
        "match_body",
        "priority",
        "strategy",
        "connect_timeout",
        "read_timeout",
        "max_body_bytes",
        "max_attempts",
        "retry_statuses",
        "retry_non_idempotent",
        "processing_mode",
        "max_concurrent_jobs",
        "budget_per_day",
        "budget_per_month",
        "alert_thresholds",
        "alert_webhook",
        "alert_emails",
        "default_max_tokens",
    )

    objects = RouteQuerySet.as_manager()

    class Meta:
        ordering = ["path_prefix", "-priority", "name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        if not self.path_prefix.startswith("/"):
            raise ValidationError({"path_prefix": "The prefix starts with /."})
        prefix = self.path_prefix.rstrip("/")
        for reserved in RESERVED_PREFIXES:
            if prefix == reserved or prefix.startswith(reserved + "/"):
                raise ValidationError({"path_prefix": f"{reserved} is reserved for the gateway itself."})
        for status in split_list(self.retry_statuses):
            if not status.isdigit() or not 100 <= int(status) <= 599:
                raise ValidationError({"retry_statuses": f"{status!r} is not an HTTP status."})
        if not isinstance(self.match_headers, dict) or not isinstance(self.match_body, dict):
            raise ValidationError("Header and body conditions are JSON objects.")
        if self.fallback_id and self.fallback_id == self.pk:
            raise ValidationError({"fallback": "A route cannot fall back to itself."})

    @property
    def method_list(self) -> list[str]:
        return [m.upper() for m in split_list(self.methods)]

    @property
    def model_list(self) -> list[str]:
        return split_list(self.model_names)


class UpstreamTarget(models.Model):
    route = models.ForeignKey(Route, on_delete=models.CASCADE, related_name="targets")
    name = models.CharField(max_length=100, blank=True, help_text="Defaults to the URL's host and port.")
    url = models.URLField(max_length=500, help_text="Base URL, e.g. http://10.0.0.5:8000/v1")
    weight = models.PositiveIntegerField(default=1)
    position = models.PositiveSmallIntegerField(default=0, help_text="Order for failover: lowest first.")
    enabled = models.BooleanField(default=True)
    credential_header = models.CharField(
        max_length=100, blank=True, help_text="Header the gateway adds upstream, e.g. Authorization."
    )
    credential_value = models.CharField(max_length=1000, blank=True, help_text="Never shown in full after saving.")
    model_aliases = models.JSONField(
        default=dict,
        blank=True,
        help_text='Public model name -> this target\'s model name, e.g. {"fast": "llama-3.1-8b-instruct"}.',
    )

    class Meta:
        ordering = ["route", "position", "id"]
        constraints = [
            # Log rows and breaker state name targets by route and name.
            models.UniqueConstraint(fields=["route", "name"], name="target_unique_name_per_route"),
        ]

    def __str__(self) -> str:
        return f"{self.route.name}/{self.name}" if self.route_id else self.name

    def save(self, *args, **kwargs):
        if not self.name:  # written without the service layer (data migrations, tests)
            self.name = default_target_name(self.url)
        super().save(*args, **kwargs)

    def clean(self) -> None:
        if self.url:  # the same guard the forwarder uses at call time
            check_target_url(self.url)
        if not isinstance(self.model_aliases, dict):
            raise ValidationError({"model_aliases": "A JSON object of public name -> upstream name."})
        if bool(self.credential_header) != bool(self.credential_value):
            raise ValidationError("Give both the credential header and its value, or neither.")
        check_credential(self.credential_header, self.credential_value)

    @property
    def masked_credential(self) -> str:
        return mask_secret(self.credential_value)


def mask_secret(value: str) -> str:
    """What may be shown of a stored secret: its last four characters at most."""
    if not value:
        return ""
    if len(value) <= 8:
        return "****"
    return "****" + value[-4:]


class APIKeyQuerySet(models.QuerySet):
    def usable(self):
        now = timezone.now()
        return self.filter(enabled=True, revoked__isnull=True).filter(Q(expires__isnull=True) | Q(expires__gt=now))


class APIKeyManager(models.Manager.from_queryset(APIKeyQuerySet)):
    def issue(self, key: "APIKey | None" = None, **fields) -> tuple["APIKey", str]:
        """Create a key (or save the unsaved `key` as a new one); returns it with the full secret,
        which is never stored."""
        full, prefix, hashed = keys.generate()
        key = key if key is not None else self.model()
        for name, value in {**fields, "prefix": prefix, "hashed_secret": hashed}.items():
            setattr(key, name, value)
        key.save(force_insert=True, using=self.db)
        return key, full

    def for_secret(self, full: str) -> "APIKey | None":
        prefix = keys.prefix_of(full)
        if prefix is None:
            return None
        key = self.filter(Q(prefix=prefix) | Q(previous_prefix=prefix)).first()
        if key is None:
            return None
        if key.prefix == prefix:
            return key if keys.matches(full, key.hashed_secret) else None
        in_grace = key.previous_expires is not None and key.previous_expires > timezone.now()
        return key if in_grace and keys.matches(full, key.previous_hashed_secret) else None


class APIKey(Limits, Budgets):
    """A consumer's key. The limit fields here override the key's quota plan."""

    name = models.CharField(max_length=100)
    owner = models.CharField(max_length=200, blank=True, help_text="Free text: team, person or project.")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    prefix = models.CharField(max_length=8, unique=True, editable=False)
    hashed_secret = models.CharField(max_length=64, editable=False)
    # The secret replaced by the last rotation, accepted until previous_expires (its grace period).
    # Unique: the proxy finds a key by either prefix (proxy/config.py).
    previous_prefix = models.CharField(max_length=8, null=True, blank=True, unique=True, editable=False)
    previous_hashed_secret = models.CharField(max_length=64, blank=True, editable=False)
    previous_expires = models.DateTimeField(null=True, blank=True, editable=False)
    rotated = models.DateTimeField(null=True, blank=True, editable=False)
    created = models.DateTimeField(auto_now_add=True)
    expires = models.DateTimeField(null=True, blank=True)
    revoked = models.DateTimeField(null=True, blank=True)
    enabled = models.BooleanField(default=True)
    all_routes = models.BooleanField(default=False, help_text="May call every route, present and future.")
    routes = models.ManyToManyField(Route, blank=True, related_name="api_keys")
    quota_plan = models.ForeignKey(QuotaPlan, null=True, blank=True, on_delete=models.SET_NULL, related_name="api_keys")
    team = models.ForeignKey(
        Team, null=True, blank=True, on_delete=models.SET_NULL, related_name="keys", help_text="At most one team."
    )

    objects = APIKeyManager()

    class Meta:
        ordering = ["-created"]
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.name} ({self.display_prefix})"

    @property
    def display_prefix(self) -> str:
        """What lists show of the key; empty until it is issued."""
        return f"{keys.KEY_START}{self.prefix}_…" if self.prefix else ""

    def rotate(self, grace: timedelta = timedelta(0)) -> str:
        """Give the key a new secret and return it (shown once). Its limits, routes and usage stay.

        The old secret keeps working for `grace`, then is refused; a secret replaced earlier is
        refused at once. Saved with .save() so every gateway process hears of it.
        """
        full, prefix, hashed = keys.generate()
        now = timezone.now()
        self.previous_prefix, self.previous_hashed_secret = self.prefix, self.hashed_secret
        self.previous_expires = now + grace
        self.prefix, self.hashed_secret, self.rotated = prefix, hashed, now
        self.save(
            update_fields=["prefix", "hashed_secret", "previous_prefix", "previous_hashed_secret", "previous_expires"]
            + ["rotated"]
        )
        return full

    def revoke(self) -> None:
        if self.revoked is None:
            self.revoked = timezone.now()
            self.save(update_fields=["revoked"])

    def effective_limits(self) -> dict[str, int | None]:
        """The plan's limits with this key's overrides applied."""
        plan = self.quota_plan
        return {
            field: getattr(self, field)
            if getattr(self, field) is not None
            else (getattr(plan, field) if plan else None)
            for field in Limits.LIMIT_FIELDS
        }


class ErrorType(models.TextChoices):
    """Every error type the gateway answers with or logs: the one list (proxy/errors.py raises them,
    the log stores them, the explorer, the API and the admin filter by them). Each shows as
    itself, as clients and the log see it."""

    INVALID_API_KEY = "invalid_api_key", "invalid_api_key"
    PERMISSION_DENIED = "permission_denied", "permission_denied"
    NOT_FOUND = "not_found", "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed", "method_not_allowed"
    CONFLICT = "conflict", "conflict"
    REQUEST_TOO_LARGE = "request_too_large", "request_too_large"
    REQUEST_TIMEOUT = "request_timeout", "request_timeout"
    INVALID_REQUEST = "invalid_request_error", "invalid_request_error"
    RATE_LIMIT_EXCEEDED = "rate_limit_exceeded", "rate_limit_exceeded"
    BUDGET_EXCEEDED = "budget_exceeded", "budget_exceeded"
    SERVICE_UNAVAILABLE = "service_unavailable", "service_unavailable"
    UPSTREAM_UNAVAILABLE = "upstream_unavailable", "upstream_unavailable"
    UPSTREAM_TIMEOUT = "upstream_timeout", "upstream_timeout"
    UPSTREAM_STREAM_ERROR = "upstream_stream_error", "upstream_stream_error"
    CLIENT_DISCONNECTED = "client_disconnected", "client_disconnected"
    INTERNAL_ERROR = "internal_error", "internal_error"


class RequestLog(models.Model):
    """One row per call through the proxy, whatever its outcome. Never edited."""

    ErrorType = ErrorType

    created = models.DateTimeField(default=timezone.now)
    request_id = models.CharField(max_length=128)
    api_key = models.ForeignKey(APIKey, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    key_prefix = models.CharField(max_length=8, blank=True)
    route = models.ForeignKey(Route, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    route_name = models.CharField(max_length=100, blank=True)
    method = models.CharField(max_length=10)
    path = models.CharField(max_length=2000)
    model = models.CharField(max_length=200, blank=True, help_text="The model the client asked for.")
    upstream_model = models.CharField(
        max_length=200, blank=True, help_text="The model sent upstream, after the target's alias."
    )
    status = models.PositiveSmallIntegerField()
    latency_ms = models.FloatField()
    upstream_ms = models.FloatField(null=True, blank=True, help_text="Until the upstream's response headers.")
    target = models.CharField(max_length=100, blank=True, help_text="The target that answered.")
    targets_tried = models.JSONField(default=list, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    fallback_from = models.CharField(max_length=100, blank=True, help_text="Route whose targets all failed.")
    streamed = models.BooleanField(default=False)
    bytes_in = models.PositiveBigIntegerField(default=0)
    bytes_out = models.PositiveBigIntegerField(default=0)
    prompt_tokens = models.PositiveIntegerField(null=True, blank=True)
    completion_tokens = models.PositiveIntegerField(null=True, blank=True)
    total_tokens = models.PositiveIntegerField(null=True, blank=True)
    usage_estimated = models.BooleanField(
        default=False, help_text="The tokens are an estimate: the answer was cut before the upstream reported them."
    )
    error_type = models.CharField(max_length=50, blank=True, choices=ErrorType.choices)
    limit = models.CharField(max_length=50, blank=True, help_text="The quota limit that refused the call.")
    client_ip = models.GenericIPAddressField(null=True, blank=True)
    # Why the call went as it did (see proxy/call.py): "match" (the route and what it matched on),
    # "attempts" (each target tried or passed over, its outcome and why the next was tried),
    # "why" (the gateway's own error message), "auth" (why a key was refused), "quota" (the
    # counter that refused the call).
    detail = models.JSONField(default=dict, blank=True)
    job_id = models.UUIDField(null=True, blank=True, help_text="Set on a queued job's run (jobs/).")
    queue_ms = models.FloatField(null=True, blank=True, help_text="A job's wait in the queue before this run.")
    # The call's cost in GATEWAY_CURRENCY, from the tokens above and the price in force when it
    # started (detail["cost"] names that price). Null: no price for its model, never 0.
    cost = models.DecimalField(max_digits=COST_DIGITS, decimal_places=COST_PLACES, null=True, blank=True)
    team_name = models.CharField(max_length=100, blank=True, help_text="The key's team when the call was made.")

    class Meta:
        ordering = ["-created"]
        indexes = [
            # The log list and retention (prune_logs) scan by time.
            models.Index(fields=["created"], name="log_created_idx"),
            # Per-key and per-route history in the admin and console.
            models.Index(fields=["api_key", "created"], name="log_key_created_idx"),
            models.Index(fields=["route", "created"], name="log_route_created_idx"),
            # Looking a call up by the request id a client reports.
            models.Index(fields=["request_id"], name="log_request_id_idx"),
            # The console's "calls for this model" filter.
            models.Index(fields=["model", "created"], name="log_model_created_idx"),
            # "Show me the failures": a partial index keeps it small.
            models.Index(fields=["created"], name="log_errors_idx", condition=Q(status__gte=400)),
            # The console explorer's filters (console/filters.py). Partial indexes keep them small and
            # cheap to write: status for the rare ones (4xx, 5xx; a 2xx is found at once by created),
            # latency for slow calls (from 1 s; faster calls are most rows, found by created), and
            # the error type and refusing limit, which most rows have empty.
            models.Index(fields=["status", "created"], name="log_error_status_idx", condition=Q(status__gte=400)),
            models.Index(fields=["latency_ms"], name="log_slow_idx", condition=Q(latency_ms__gte=1000)),
            models.Index(fields=["error_type", "created"], name="log_error_type_idx", condition=~Q(error_type="")),
            models.Index(fields=["limit", "created"], name="log_limit_idx", condition=~Q(limit="")),
            # A team's calls, the calls that cost at least some amount, and those of a method other
            # than POST: without them a team with no calls yet, an amount no call reached or a method
            # no call used read the whole log (0.3-0.5 s at 1,000,000 calls, bench/console.py).
            # Partial: calls without a team or a price are not in them, nor POSTs (most calls, found
            # at once by log_created_idx).
            models.Index(fields=["team_name", "created"], name="log_team_idx", condition=~Q(team_name="")),
            models.Index(fields=["cost"], name="log_cost_idx", condition=Q(cost__isnull=False)),
            models.Index(fields=["method", "created"], name="log_method_idx", condition=~Q(method="POST")),
        ]

    def __str__(self) -> str:
        return f"{self.created:%Y-%m-%d %H:%M:%S} {self.method} {self.path} {self.status}"


class ModelPrice(models.Model):
    """What an upstream model costs, from `valid_from` on, in GATEWAY_CURRENCY.

    A call is charged the price in force when it started; its cost is stored on its log row, so
    a later change never alters the cost of calls already made. A price for one target wins over
    the model's general price.
    """

    model = models.CharField(max_length=200, help_text="The upstream model name, as sent to the target.")
    target = models.ForeignKey(
        UpstreamTarget,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="prices",
        help_text="Optional: this price only for one target.",
    )
    input_per_million = models.DecimalField(
        max_digits=PRICE_DIGITS, decimal_places=PRICE_PLACES, validators=[check_price], help_text="Per 1M input tokens."
    )
    output_per_million = models.DecimalField(
        max_digits=PRICE_DIGITS,
        decimal_places=PRICE_PLACES,
        validators=[check_price],
        help_text="Per 1M output tokens.",
    )
    per_call = models.DecimalField(
        max_digits=PRICE_DIGITS,
        decimal_places=PRICE_PLACES,
        null=True,
        blank=True,
        validators=[check_price],
        help_text="Optional: added to each call an upstream answered.",
    )
    valid_from = models.DateTimeField(default=timezone.now)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["model", "target", "-valid_from"]
        constraints = [
            # One price per model, target and start; the general price (no target) likewise.
            models.UniqueConstraint(fields=["model", "target", "valid_from"], name="price_unique_target_from"),
            models.UniqueConstraint(
                fields=["model", "valid_from"], condition=Q(target__isnull=True), name="price_unique_general_from"
            ),
        ]

    def __str__(self) -> str:
        where = f" on {self.target}" if self.target_id else ""
        start = self.valid_from.strftime("%Y-%m-%d %H:%M") if hasattr(self.valid_from, "strftime") else self.valid_from
        return f"{self.model}{where} from {start}"


class BudgetAlert(models.Model):
    """A period's spend crossed one of a budget's alert thresholds: recorded once, then sent.

    Found when a call settles its cost (proxy/budgets.py compares the shared spend counter before
    and after the call's cost, so across every process and instance exactly one call crosses each
    threshold) and saved by the log writer with that call's row (proxy/alerts.py); the unique
    constraint keeps it to one row per budget, threshold and period whatever happens to the
    counters. The jobs workers send it (jobs/alerts.py): to GATEWAY_BUDGET_ALERT_WEBHOOK, signed like
    job webhooks, and/or by email to GATEWAY_BUDGET_ALERT_EMAILS, retried with backoff up to
    GATEWAY_WEBHOOK_MAX_ATTEMPTS times. The owner is kept by kind, id and name, so the alert
    outlives a deleted key, team or route.
    """

    class Scope(models.TextChoices):
        KEY = "key"
        TEAM = "team"
        ROUTE = "route"

    class State(models.TextChoices):
        PENDING = "pending", "waiting to be sent"
        SENT = "sent", "sent"
        FAILED = "failed", "not sent: gave up"
        UNSENT = "unsent", "recorded only: no destination set"

    scope = models.CharField(max_length=5, choices=Scope.choices)
    owner_id = models.PositiveBigIntegerField(help_text="The key's, team's or route's id.")
    owner_name = models.CharField(max_length=100)
    budget = models.CharField(max_length=20, help_text="budget_per_day or budget_per_month.")
    threshold = models.PositiveSmallIntegerField(help_text="Percent of the budget.")
    period_start = models.DateField(help_text="The day, or the month's first day, in TIME_ZONE.")
    amount = models.DecimalField(max_digits=BUDGET_DIGITS, decimal_places=BUDGET_PLACES, help_text="The budget.")
    spent = models.DecimalField(
        max_digits=COST_DIGITS, decimal_places=COST_PLACES, help_text="The period's spend when it crossed."
    )
    request_id = models.CharField(max_length=128, blank=True, help_text="The call whose cost crossed it.")
    created = models.DateTimeField(default=timezone.now)
    state = models.CharField(max_length=7, choices=State.choices, default=State.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    webhook_status = models.PositiveSmallIntegerField(null=True, blank=True, help_text="The receiver's last answer.")
    webhook_sent = models.DateTimeField(null=True, blank=True)
    email_sent = models.DateTimeField(null=True, blank=True)
    error = models.CharField(max_length=500, blank=True, help_text="Why the last attempt failed.")

    class Meta:
        ordering = ["-created", "-id"]
        constraints = [
            # One alert per budget, threshold and period, however many processes see the crossing.
            models.UniqueConstraint(
                fields=["scope", "owner_id", "budget", "threshold", "period_start"], name="alert_once_per_period"
            ),
        ]
        indexes = [
            # The console's list, newest first.
            models.Index(fields=["created"], name="alert_created_idx"),
            # A key's or team's page: its alerts, newest first.
            models.Index(fields=["scope", "owner_id", "created"], name="alert_owner_idx"),
        ]

    def __str__(self) -> str:
        period = "daily" if self.budget == "budget_per_day" else "monthly"
        return f"{self.scope} {self.owner_name}: {self.threshold} % of the {period} budget ({self.period_start})"

    @property
    def period(self) -> str:
        return "day" if self.budget == "budget_per_day" else "month"


class KeyUsage(models.Model):
    """Durable per-key, per-day totals: the source of truth for token quotas after a cache restart."""

    api_key = models.ForeignKey(APIKey, on_delete=models.CASCADE, related_name="usage")
    day = models.DateField()
    requests = models.PositiveBigIntegerField(default=0)
    prompt_tokens = models.PositiveBigIntegerField(default=0)
    completion_tokens = models.PositiveBigIntegerField(default=0)
    total_tokens = models.PositiveBigIntegerField(default=0)

    class Meta:
        ordering = ["-day"]
        verbose_name_plural = "key usage"
        constraints = [
            # One row per key and day; quotas sum this month's rows of one key.
            models.UniqueConstraint(fields=["api_key", "day"], name="usage_unique_key_day"),
        ]

    def __str__(self) -> str:
        return f"{self.api_key_id} {self.day}: {self.total_tokens} tokens"


class ConfigGenerationManager(models.Manager):
    ROW = 1  # the one row

    def current(self) -> int:
        """The generation every gateway process compares with its copy (a primary-key read)."""
        return self.filter(pk=self.ROW).values_list("n", flat=True).first() or 0

    def bump(self) -> None:
        """Announce a committed change: an atomic increment, so concurrent bumps are never lost."""
        if not self.filter(pk=self.ROW).update(n=models.F("n") + 1, changed=timezone.now()):
            self.get_or_create(pk=self.ROW)  # the row went missing (a flushed database): start it again
            self.filter(pk=self.ROW).update(n=models.F("n") + 1, changed=timezone.now())


class ConfigGeneration(models.Model):
    """A counter bumped after every committed change to routes, targets, keys or plans.

    Every gateway process reads it at most once per GATEWAY_CONFIG_TTL and reloads its in-memory
    copy when it moved, so a change made by any process reaches all of them, with or without Redis.
    """

    n = models.BigIntegerField(default=0)
    changed = models.DateTimeField(default=timezone.now)

    objects = ConfigGenerationManager()

    def __str__(self) -> str:
        return f"configuration generation {self.n}"


class ManagementTokenManager(models.Manager):
    def issue(self, user, name: str) -> tuple["ManagementToken", str]:
        """Create a token for `user`; returns it with the full secret, which is never stored."""
        full, prefix, hashed = keys.generate(keys.TOKEN_START)
        return self.create(user=user, name=name, prefix=prefix, hashed_secret=hashed), full

    def for_secret(self, full: str) -> "ManagementToken | None":
        """The live token of an active user for this secret, or None."""
        prefix = keys.prefix_of(full, keys.TOKEN_START)
        if prefix is None:
            return None
        token = self.select_related("user").filter(prefix=prefix, revoked__isnull=True, user__is_active=True).first()
        if token is None or not keys.matches(full, token.hashed_secret):
            return None
        return token


class ManagementToken(models.Model):
    """A token for the management API (/api/), acting as its user with that user's role.

    Stored like the gateway's keys: a visible prefix and the SHA-256 of the whole token.
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="management_tokens")
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=8, unique=True, editable=False)
    hashed_secret = models.CharField(max_length=64, editable=False)
    created = models.DateTimeField(auto_now_add=True)
    last_used = models.DateTimeField(null=True, blank=True, editable=False)
    revoked = models.DateTimeField(null=True, blank=True)

    objects = ManagementTokenManager()

    class Meta:
        ordering = ["-created"]

    def __str__(self) -> str:
        return f"{self.name} ({keys.TOKEN_START}{self.prefix}_…)"


# Latency histogram of the rollups: bucket i counts calls with latency <= LATENCY_EDGES_MS[i] (and
# above the previous edge); the last bucket counts everything slower. Edges step by at most 1.5x,
# so a percentile read from the rollups is exact to within one bucket.
LATENCY_EDGES_MS = (
    *(1, 2, 3, 5, 7, 10, 15, 20, 30, 50, 70, 100, 150, 200, 300, 500, 700),
    *(1000, 1500, 2000, 3000, 5000, 7000, 10000, 15000, 20000, 30000, 60000, 120000),
)
LATENCY_BUCKETS = tuple(f"latency_le_{i}" for i in range(len(LATENCY_EDGES_MS) + 1))


class UsageRollup(models.Model):
    """Calls summed per period (minute, hour or day, UTC), status class and one dimension: all calls,
    or by key, by route or by model.

    One dimension a row, not their cross product: a range's rankings by key, route and model and
    its totals each read only their own rows, however many keys use however many models. Written
    with the log rows, in the same transaction (proxy/rollups.py), so for every period the log
    still holds the sums equal the log's. Pruning old log rows keeps them: the dashboard's history
    outlives the rows. Keys are kept as "#<id>" (one key across rotations; older rows hold the
    prefix), routes by the name the log row records, so a deleted key or route still adds up.
    """

    class Period(models.TextChoices):
        MINUTE = "minute"
        HOUR = "hour"
        DAY = "day"

    class Dimension(models.TextChoices):
        ALL = "all"
        KEY = "key"
        ROUTE = "route"
        MODEL = "model"
        TEAM = "team"

    period = models.CharField(max_length=6, choices=Period.choices)
    dimension = models.CharField(max_length=5, choices=Dimension.choices)
    start = models.DateTimeField()
    value = models.CharField(max_length=200, blank=True, help_text="Key prefix, route name or model; empty: none.")
    status_class = models.PositiveSmallIntegerField(help_text="2 for 2xx ... 5 for 5xx; 0 when the client left.")
    calls = models.PositiveBigIntegerField(default=0)
    errors = models.PositiveBigIntegerField(default=0, help_text="Calls that ended with a gateway error type.")
    prompt_tokens = models.PositiveBigIntegerField(default=0)
    completion_tokens = models.PositiveBigIntegerField(default=0)
    total_tokens = models.PositiveBigIntegerField(default=0)
    latency_sum_ms = models.FloatField(default=0)
    # Cost in picos (10^-12 of GATEWAY_CURRENCY): integers add exactly on every database.
    cost_picos = models.BigIntegerField(default=0)
    unpriced = models.PositiveBigIntegerField(default=0, help_text="Calls whose model has no price.")
    for _bucket in LATENCY_BUCKETS:  # one counter column per latency bucket: upserts add them in SQL
        vars()[_bucket] = models.PositiveBigIntegerField(default=0)
    del _bucket

    class Meta:
        constraints = [
            # The upsert's conflict target: one row per group. Its leading columns also serve the
            # dashboard's "this period and dimension, from ... to ..." reads and prune_rollups.
            models.UniqueConstraint(
                fields=["period", "dimension", "start", "value", "status_class"],
                name="rollup_unique_group",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.period} {self.start:%Y-%m-%d %H:%M} {self.dimension} {self.value} {self.status_class}xx"


class SpooledLogFile(models.Model):
    """A spool file of log rows (proxy/spool.py) whose rows are in the request log.

    Saved in the transaction that writes the file's rows, before the file is removed: a file
    replayed twice (two processes starting together, or one that died between the commit and the
    removal) finds its name here and adds nothing."""

    name = models.CharField(max_length=200, unique=True)
    rows = models.PositiveIntegerField(default=0)
    replayed = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{self.name}: {self.rows} rows"
