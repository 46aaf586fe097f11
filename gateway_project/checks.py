"""Start-up checks of the gateway's settings (Django system checks, tag "gateway_settings").

A value outside its set or range refuses to start with a message naming the setting and what it
may be, instead of being read some other way: GATEWAY_CACHE_FAILURE=Closed would otherwise fail
open. They run with every management command (`migrate`, `jobs_worker`, ...) and, through
gateway_project/worker.py, in every gunicorn worker before it serves: an error stops the server.
Registered in routes_admin's AppConfig.ready().
"""

import math
import os
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.core.checks import Error, Warning, register

TAG = "gateway_settings"


@dataclass(frozen=True)
class Range:
    minimum: float
    above: bool = False  # the minimum itself is not allowed
    maximum: float | None = None

    def refuses(self, value) -> str | None:
        if isinstance(value, timedelta):
            value = value.total_seconds()
        if isinstance(value, float) and not math.isfinite(value):
            return "a finite number"
        too_low = value <= self.minimum if self.above else value < self.minimum
        too_high = self.maximum is not None and value > self.maximum
        if not (too_low or too_high):
            return None
        low = f"above {self.minimum:g}" if self.above else f"at least {self.minimum:g}"
        return low if self.maximum is None else f"{low} and at most {self.maximum:g}"


POSITIVE = Range(0, above=True)
NOT_NEGATIVE = Range(0)
AT_LEAST_ONE = Range(1)

# Django setting -> (the environment variable it comes from, allowed values).
CHOICES = {
    "GATEWAY_CACHE_FAILURE": ("GATEWAY_CACHE_FAILURE", ("open", "closed")),
}

# Django setting -> (the environment variable it comes from, range).
RANGES = {
    "GATEWAY_CONFIG_TTL": ("GATEWAY_CONFIG_TTL", NOT_NEGATIVE),
    "GATEWAY_CONFIG_DB_TIMEOUT": ("GATEWAY_CONFIG_DB_TIMEOUT", POSITIVE),
    "GATEWAY_LOG_FLUSH_SECONDS": ("GATEWAY_LOG_FLUSH_SECONDS", NOT_NEGATIVE),
    "GATEWAY_LOG_BATCH_SIZE": ("GATEWAY_LOG_BATCH_SIZE", AT_LEAST_ONE),
    "GATEWAY_ROLLUP_MINUTE_DAYS": ("GATEWAY_ROLLUP_MINUTE_DAYS", POSITIVE),
    "GATEWAY_ROLLUP_HOUR_DAYS": ("GATEWAY_ROLLUP_HOUR_DAYS", POSITIVE),
    "GATEWAY_POOL_SIZE": ("GATEWAY_POOL_SIZE", AT_LEAST_ONE),
    "GATEWAY_BREAKER_FAILURES": ("GATEWAY_BREAKER_FAILURES", AT_LEAST_ONE),
    "GATEWAY_BREAKER_WINDOW": ("GATEWAY_BREAKER_WINDOW", AT_LEAST_ONE),
    "GATEWAY_BREAKER_COOLDOWN": ("GATEWAY_BREAKER_COOLDOWN", AT_LEAST_ONE),
    "GATEWAY_INFLIGHT_TTL": ("GATEWAY_INFLIGHT_TTL", POSITIVE),
    "GATEWAY_HEADER_TIMEOUT": ("GATEWAY_HEADER_TIMEOUT", POSITIVE),
    "GATEWAY_BODY_READ_TIMEOUT": ("GATEWAY_BODY_READ_TIMEOUT", POSITIVE),
    "GATEWAY_BODY_TIMEOUT": ("GATEWAY_BODY_TIMEOUT", POSITIVE),
    "GATEWAY_MAX_WAITING_CONNECTIONS": ("GATEWAY_MAX_WAITING_CONNECTIONS", AT_LEAST_ONE),
    "GATEWAY_DRAIN_MAX_BYTES": ("GATEWAY_DRAIN_MAX_BYTES", NOT_NEGATIVE),
    "GATEWAY_HASHER_THREADS": ("GATEWAY_HASHER_THREADS", AT_LEAST_ONE),
    "AXES_FAILURE_LIMIT": ("GATEWAY_SIGNIN_FAILURE_LIMIT", AT_LEAST_ONE),
    "AXES_COOLOFF_TIME": ("GATEWAY_SIGNIN_COOLOFF_MINUTES", POSITIVE),
    "GATEWAY_JOB_LEASE_SECONDS": ("GATEWAY_JOB_LEASE_SECONDS", POSITIVE),
    "GATEWAY_JOB_MAX_ATTEMPTS": ("GATEWAY_JOB_MAX_ATTEMPTS", AT_LEAST_ONE),
    "GATEWAY_JOB_WAIT_SECONDS": ("GATEWAY_JOB_WAIT_SECONDS", POSITIVE),
    "GATEWAY_JOB_POLL_SECONDS": ("GATEWAY_JOB_POLL_SECONDS", POSITIVE),
    "GATEWAY_JOB_SHUTDOWN_SECONDS": ("GATEWAY_JOB_SHUTDOWN_SECONDS", NOT_NEGATIVE),
    "GATEWAY_JOB_IDEMPOTENCY_SECONDS": ("GATEWAY_JOB_IDEMPOTENCY_SECONDS", NOT_NEGATIVE),
    "GATEWAY_JOB_RETENTION_DAYS": ("GATEWAY_JOB_RETENTION_DAYS", POSITIVE),
    "GATEWAY_WEBHOOK_MAX_ATTEMPTS": ("GATEWAY_WEBHOOK_MAX_ATTEMPTS", AT_LEAST_ONE),
    "GATEWAY_WEBHOOK_BACKOFF_SECONDS": ("GATEWAY_WEBHOOK_BACKOFF_SECONDS", NOT_NEGATIVE),
    "GATEWAY_WEBHOOK_TIMEOUT": ("GATEWAY_WEBHOOK_TIMEOUT", POSITIVE),
    "EMAIL_PORT": ("EMAIL_PORT", AT_LEAST_ONE),
    "EMAIL_TIMEOUT": ("EMAIL_TIMEOUT", POSITIVE),
    "GATEWAY_WORKERS": ("GATEWAY_WORKERS", AT_LEAST_ONE),
    "TRUSTED_PROXY_COUNT": ("TRUSTED_PROXY_COUNT", NOT_NEGATIVE),
}

# On/off variables. django-environ reads any word it does not know as "off", so HTTPS=ture would
# quietly turn secure cookies off: here the word itself is checked.
SWITCHES = (
    "GATEWAY_EXPOSE_TARGET",
    "GATEWAY_ALLOW_LINK_LOCAL",
    "GATEWAY_API_DOCS_PUBLIC",
    "GATEWAY_ALLOW_WORKERS_WITHOUT_REDIS",
    "DEBUG",
    "HTTPS",
    "SECURE_SSL_REDIRECT",
    "BEHIND_PROXY",
    "EMAIL_USE_TLS",
    "EMAIL_USE_SSL",
)
SWITCH_WORDS = ("1", "0", "true", "false", "on", "off", "yes", "no")

# Read by gunicorn.conf.py alone (the server starts before Django), so checked from the
# environment: variable -> allowed values, or range of a whole number.
SERVER_CHOICES = {
    "GATEWAY_LOG_LEVEL": ("debug", "info", "warning", "error", "critical"),
    "GATEWAY_GC_FREEZE": ("0", "1"),
}
SERVER_RANGES = {
    "GATEWAY_WORKER_CONNECTIONS": AT_LEAST_ONE,
    "GATEWAY_BACKLOG": AT_LEAST_ONE,
    "GATEWAY_KEEPALIVE": NOT_NEGATIVE,
    "GATEWAY_WORKER_TIMEOUT": AT_LEAST_ONE,
    "GATEWAY_GRACEFUL_TIMEOUT": NOT_NEGATIVE,
    "GATEWAY_MAX_REQUESTS": NOT_NEGATIVE,
    "GATEWAY_MAX_REQUESTS_JITTER": NOT_NEGATIVE,
}


def _choice_error(variable: str, value, allowed) -> Error:
    return Error(
        f"{variable} is {value!r}; it must be one of: {', '.join(allowed)}.",
        hint=f"Set {variable} to one of these values, or leave it unset for its default.",
        id="gateway.E001",
    )


def _range_error(variable: str, value, wanted: str) -> Error:
    return Error(f"{variable} is {value!r}; it must be {wanted}.", id="gateway.E002")


@register(TAG)
def check_setting_values(app_configs=None, **kwargs) -> list:
    errors = []
    for name, (variable, allowed) in CHOICES.items():
        value = getattr(settings, name)
        if value not in allowed:
            errors.append(_choice_error(variable, value, allowed))
    for name, (variable, allowed_range) in RANGES.items():
        value = getattr(settings, name)
        wanted = allowed_range.refuses(value)
        if wanted:
            shown = os.environ.get(variable, value)
            errors.append(_range_error(variable, shown, wanted))
    for variable in SWITCHES:
        word = os.environ.get(variable)
        if word is not None and word.strip().lower() not in SWITCH_WORDS:
            errors.append(_choice_error(variable, word, SWITCH_WORDS))
    for variable, allowed in SERVER_CHOICES.items():
        word = os.environ.get(variable)
        if word is not None and word.strip().lower() not in allowed:
            errors.append(_choice_error(variable, word, allowed))
    for variable, allowed_range in SERVER_RANGES.items():
        word = os.environ.get(variable)
        if word is None:
            continue
        try:
            wanted = allowed_range.refuses(int(word))
        except ValueError:
            wanted = "a whole number"
        if wanted:
            errors.append(_range_error(variable, word, wanted))
    return errors + _budget_alert_errors()


def _budget_alert_errors() -> list:
    """The alert thresholds parse; the alert webhook is on the webhook allow-list (else every alert
    would fail to send, found out only when a budget is spent)."""
    from django.core.exceptions import ValidationError

    from routes_admin import callbacks
    from routes_admin.pricing import parse_thresholds

    errors = []
    try:
        parse_thresholds(settings.GATEWAY_BUDGET_ALERT_THRESHOLDS)
    except ValidationError as exc:
        errors.append(
            _range_error("GATEWAY_BUDGET_ALERT_THRESHOLDS", settings.GATEWAY_BUDGET_ALERT_THRESHOLDS, exc.messages[0])
        )
    if settings.GATEWAY_BUDGET_ALERT_WEBHOOK:
        try:
            callbacks.parse(settings.GATEWAY_BUDGET_ALERT_WEBHOOK)
        except callbacks.Refused as exc:
            message = str(exc).replace("X-Callback-URL", "GATEWAY_BUDGET_ALERT_WEBHOOK")
            errors.append(Error(message, id="gateway.E005"))
    if settings.EMAIL_USE_TLS and settings.EMAIL_USE_SSL:
        errors.append(Error("EMAIL_USE_TLS and EMAIL_USE_SSL are both on; set at most one.", id="gateway.E006"))
    return errors


@register(TAG)
def check_workers_share_their_counters(app_configs=None, **kwargs) -> list:
    """Without Redis, quota counters, concurrency slots and breaker states live in each process's
    memory: N workers would each count on their own, and a key's limits would hold N times over."""
    workers = settings.GATEWAY_WORKERS
    if workers <= 1 or settings.REDIS_URL:
        return []
    explained = (
        f"GATEWAY_WORKERS is {workers} but REDIS_URL is not set: each worker keeps its own quota "
        f"counters, concurrency slots and breaker states, so a key's limits would hold up to {workers} times over."
    )
    if settings.GATEWAY_ALLOW_WORKERS_WITHOUT_REDIS:
        return [Warning(explained, id="gateway.W003")]
    return [
        Error(
            explained,
            hint="Set REDIS_URL (shared counters), or GATEWAY_WORKERS=1 (one gevent worker serves thousands of "
            "calls), or GATEWAY_ALLOW_WORKERS_WITHOUT_REDIS=1 to accept per-worker limits.",
            id="gateway.E003",
        )
    ]
