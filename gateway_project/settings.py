"""Settings for the gateway, every value read from the environment.

With no environment at all it runs on SQLite and an in-process cache, so a fresh
checkout works. Every variable is documented in the README ("Settings").
"""

import importlib.util
from datetime import timedelta
from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
# A local .env (written by `make run`, never committed) may hold SECRET_KEY and friends; the
# environment wins. GATEWAY_DOT_ENV names another file, or "" to read none.
DOT_ENV = env.str("GATEWAY_DOT_ENV", default=str(BASE_DIR / ".env"))
if DOT_ENV:
    environ.Env.read_env(DOT_ENV, overwrite=False)


def secret(name: str, default: str | None = None) -> str | None:
    """A secret from NAME, or from the file named by NAME_FILE (Docker/Kubernetes secrets)."""
    path = env.str(f"{name}_FILE", default="")
    if path:
        return Path(path).read_text().strip()
    return env.str(name, default=default)


DEBUG = env.bool("DEBUG", default=False)
SECRET_KEY = secret("SECRET_KEY")
if not SECRET_KEY:
    if not DEBUG:
        raise RuntimeError("SECRET_KEY is not set (set SECRET_KEY or SECRET_KEY_FILE; `make run` writes one to .env)")
    SECRET_KEY = "insecure-debug-only-key"

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "gateway_project.apps.GatewayProjectConfig",  # start-up checks of these settings (checks.py)
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "axes",
    "routes_admin",  # before auditlog: its auditlogflush command replaces auditlog's (which erases history)
    "auditlog",  # change history (routes_admin's admin replaces its page)
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # the API docs page's scripts, served by the gateway (no CDN)
    "proxy.apps.ProxyConfig",
    "django_tasks",
    "django_tasks_db",
    "jobs",
    "api",
    "console",
]
# Development only (requirements-test.lock, which `make run` and `make test` install; not the
# runtime lock): its makemigrations keeps each app's max_migration.txt current, and its system
# check fails when an app's migrations fork or that file is stale (see docs/migrations.md).
if importlib.util.find_spec("django_linear_migrations"):
    INSTALLED_APPS.append("django_linear_migrations")

MIDDLEWARE = [
    "proxy.middleware.RequestIdMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Proxied calls go from here straight to the proxy view: the rest serves browser pages and the API.
    "gateway_project.middleware.ProxiedPathsMiddleware",
    # The admin's CSS and scripts, served by the gateway itself (no separate web server needed).
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.middleware.common.CommonMiddleware",
    # Django's own, applied to the admin's browser pages only (see gateway_project/middleware.py).
    "gateway_project.middleware.BrowserSessionMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "gateway_project.middleware.BrowserAuthenticationMiddleware",
    "gateway_project.middleware.ChangeHistoryMiddleware",
    "gateway_project.middleware.BrowserMessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Turns a locked-out sign-in into the lockout page (it only looks at a flag the backend sets).
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "gateway_project.urls"
WSGI_APPLICATION = "gateway_project.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# Database: SQLite by default, DATABASE_URL (postgres://...) in production.
DATABASES = {"default": env.db_url("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # A bounded pool per process: with gevent every greenlet would otherwise hold a connection.
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": env.int("DATABASE_POOL_MIN", default=1),
        "max_size": env.int("DATABASE_POOL_MAX", default=10),
        "timeout": env.float("DATABASE_POOL_TIMEOUT", default=10.0),
        # psycopg_pool retries a failed connection after 1, 2, 4, 8 ... s: after a 20 s outage a
        # process could wait 11 s more for its connection, long enough for another jobs worker to
        # take its jobs for lost (a fault run). Giving up after 1 s leaves the next try to the next
        # caller (each asks every second or so), so the pool connects as soon as the database is back.
        "reconnect_timeout": 1.0,
    }
    DATABASES["default"]["CONN_MAX_AGE"] = 0  # the pool reuses connections; Django must not hold them too
else:
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"timeout": 20, "transaction_mode": "IMMEDIATE", "init_command": "PRAGMA journal_mode=WAL;"}
    )
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Cache: in-process by default, Redis when REDIS_URL is set (shared by every worker and instance).
REDIS_URL = env.str("REDIS_URL", default="")
if REDIS_URL:
    CACHES = {
        "default": {
            # Django's RedisCache, with one connection pool per process (not per greenlet) and a
            # one-round-trip incr: see gateway_project/cache.py.
            "BACKEND": "gateway_project.cache.SharedRedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": env.str("CACHE_KEY_PREFIX", default="gw"),
            "OPTIONS": {
                # Fail fast when Redis is away, so GATEWAY_CACHE_FAILURE can decide quickly.
                "socket_connect_timeout": env.float("REDIS_TIMEOUT", default=0.5),
                "socket_timeout": env.float("REDIS_TIMEOUT", default=0.5),
                # Shared by every greenlet of a process (gateway_project/cache.py): when all are
                # busy a call waits up to REDIS_POOL_TIMEOUT for one instead of failing at once.
                "pool_class": "redis.BlockingConnectionPool",
                "max_connections": env.int("REDIS_MAX_CONNECTIONS", default=200),
                "timeout": env.float("REDIS_POOL_TIMEOUT", default=2.0),
            },
        }
    }
else:
    CACHES = {
        "default": {
            "BACKEND": "gateway_project.cache.GatewayLocMemCache",  # Django's, minus memcached key checks
            "LOCATION": "gateway",
            "OPTIONS": {"MAX_ENTRIES": 100_000},
        }
    }

# Django's list with its PBKDF2 replaced by the same hash run in a thread pool, off the event loop
# that serves the proxied calls (gateway_project/hashers.py). Same algorithm name: existing
# password hashes still verify.
PASSWORD_HASHERS = [
    "gateway_project.hashers.ThreadedPBKDF2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2SHA1PasswordHasher",
    "django.contrib.auth.hashers.Argon2PasswordHasher",
    "django.contrib.auth.hashers.BCryptSHA256PasswordHasher",
    "django.contrib.auth.hashers.ScryptPasswordHasher",
]
# OS threads per worker that hash passwords: also the most cores a sign-in flood can take.
GATEWAY_HASHER_THREADS = env.int("GATEWAY_HASHER_THREADS", default=1)

# Sign-in lockout (django-axes): after GATEWAY_SIGNIN_FAILURE_LIMIT wrong passwords from one client
# address, that address may not sign in for GATEWAY_SIGNIN_COOLOFF_MINUTES. The address is the one
# the proxy uses (TRUSTED_PROXY_COUNT), so a forged X-Forwarded-For neither dodges the lockout nor
# locks another address out. Attempts are kept in the database: every worker and instance sees them.
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]
AXES_FAILURE_LIMIT = env.int("GATEWAY_SIGNIN_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = timedelta(minutes=env.float("GATEWAY_SIGNIN_COOLOFF_MINUTES", default=15))
AXES_LOCKOUT_PARAMETERS = ["ip_address"]  # not the user name: anyone could lock an admin out
AXES_CLIENT_IP_CALLABLE = "gateway_project.client_address.client_ip_of"
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "admin/locked_out.html"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = env.str("TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
# WhiteNoise serves the admin's files straight from the apps' static folders: no collectstatic
# step to forget. STATIC_ROOT is only for those who collect them for a CDN or another server.
WHITENOISE_USE_FINDERS = True
STATIC_ROOT = env.str("STATIC_ROOT", default="") or None

# The proxy reads bodies itself and applies each route's own limit.
DATA_UPLOAD_MAX_MEMORY_SIZE = None
# Proxied paths are forwarded as they came: no slash appended.
APPEND_SLASH = False

# DRF's own defaults serve the management API and the console: sessions (with CSRF) and signed-in
# users only. The proxy view sets what it needs on its class (proxy/views.py).
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["rest_framework.authentication.SessionAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",  # the management API's OpenAPI schema
}

# The management API's OpenAPI schema (/api/schema/) and its docs page (/api/docs/).
SPECTACULAR_SETTINGS = {
    "TITLE": "AI gateway management API",
    "DESCRIPTION": "Routes, targets, quota plans, API keys, request logs, usage and the change history. "
    "Authenticate with `Authorization: Bearer gwm_...` (a management token) or an admin session.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "PREPROCESSING_HOOKS": ["api.schema.api_views_only"],
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "api.schema.document_errors",
        "api.schema.state_rules",
        "api.schema.state_no_nul_in_text_filters",
    ],
}

# /api/schema/ and /api/docs/ answer only signed-in users and management tokens unless this is on.
GATEWAY_API_DOCS_PUBLIC = env.bool("GATEWAY_API_DOCS_PUBLIC", default=False)

# Behind a TLS-terminating proxy, trust its X-Forwarded-Proto (and the client address it sends).
if env.bool("BEHIND_PROXY", default=False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
TRUSTED_PROXY_COUNT = env.int("TRUSTED_PROXY_COUNT", default=0)

# Production hardening; `manage.py check --deploy` passes with DEBUG off and HTTPS on.
HTTPS = env.bool("HTTPS", default=False)
SESSION_COOKIE_SECURE = HTTPS
CSRF_COOKIE_SECURE = HTTPS
SECURE_SSL_REDIRECT = HTTPS and env.bool("SECURE_SSL_REDIRECT", default=True)
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31536000 if HTTPS else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = HTTPS
SECURE_HSTS_PRELOAD = HTTPS
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]

# --- The gateway's own settings -------------------------------------------------------------
# How long a process trusts its in-memory copy of routes and keys before checking for changes.
GATEWAY_CONFIG_TTL = env.float("GATEWAY_CONFIG_TTL", default=1.0)
# How long the configuration check and a new key's lookup wait for a database connection before
# the call is served from the last good configuration (or a new key gets 503): see proxy/config.py.
GATEWAY_CONFIG_DB_TIMEOUT = env.float("GATEWAY_CONFIG_DB_TIMEOUT", default=1.0)
# Log rows are written in batches by a background thread every this many seconds; 0 writes
# each row synchronously when its call finishes.
GATEWAY_LOG_FLUSH_SECONDS = env.float("GATEWAY_LOG_FLUSH_SECONDS", default=0.5)
GATEWAY_LOG_BATCH_SIZE = env.int("GATEWAY_LOG_BATCH_SIZE", default=500)
# Log rows a stopping process cannot write (the database is away) are kept in files here and
# replayed by the next process that starts (proxy/spool.py). Local disk that outlives a restart.
GATEWAY_LOG_SPOOL_DIR = env.str("GATEWAY_LOG_SPOOL_DIR", default=str(BASE_DIR / "var" / "log-spool"))
# Retention of the dashboard's rollups (manage.py prune_rollups): per-minute sums are many and only
# the short ranges read them; per-hour sums serve ranges up to weeks; per-day sums are kept.
GATEWAY_ROLLUP_MINUTE_DAYS = env.float("GATEWAY_ROLLUP_MINUTE_DAYS", default=8)
GATEWAY_ROLLUP_HOUR_DAYS = env.float("GATEWAY_ROLLUP_HOUR_DAYS", default=90)
# What to do when the cache (Redis) is unreachable: "open" serves and logs, "closed" answers 503.
GATEWAY_CACHE_FAILURE = env.str("GATEWAY_CACHE_FAILURE", default="open")
# The currency of prices, costs and budgets (an ISO 4217 code); every amount is in it.
from routes_admin.pricing import CURRENCIES  # noqa: E402 (a plain module: the list of ISO 4217 codes)

GATEWAY_CURRENCY = env.str("GATEWAY_CURRENCY", default="USD").strip().upper()
if GATEWAY_CURRENCY not in CURRENCIES:
    raise RuntimeError(f"GATEWAY_CURRENCY={GATEWAY_CURRENCY!r} is not an ISO 4217 currency code (like USD, EUR)")
# Upstream connection pool size per process (requests/urllib3).
GATEWAY_POOL_SIZE = env.int("GATEWAY_POOL_SIZE", default=1000)
# When set, /metrics answers only scrapers sending `Authorization: Bearer <token>`.
GATEWAY_METRICS_TOKEN = secret("GATEWAY_METRICS_TOKEN", default="")
# Send the chosen target's name back in X-Gateway-Target.
GATEWAY_EXPOSE_TARGET = env.bool("GATEWAY_EXPOSE_TARGET", default=False)
# SSRF guard: allowed upstream hosts (empty: any), and whether link-local/metadata addresses may be used.
GATEWAY_UPSTREAM_HOSTS = env.list("GATEWAY_UPSTREAM_HOSTS", default=[])
GATEWAY_ALLOW_LINK_LOCAL = env.bool("GATEWAY_ALLOW_LINK_LOCAL", default=False)
# Circuit breaker: failures within the window that open it, and how long it stays open.
GATEWAY_BREAKER_FAILURES = env.int("GATEWAY_BREAKER_FAILURES", default=5)
GATEWAY_BREAKER_WINDOW = env.int("GATEWAY_BREAKER_WINDOW", default=30)
GATEWAY_BREAKER_COOLDOWN = env.int("GATEWAY_BREAKER_COOLDOWN", default=30)
# Longest a call holds its concurrency slot (proxy/slots.py): a slot never released (a killed
# process, an unreachable cache at the call's end) is free again this long after its call started.
GATEWAY_INFLIGHT_TTL = env.float("GATEWAY_INFLIGHT_TTL", default=600.0)
# Slow and idle clients (gateway_project/worker.py): a request head must be complete within
# GATEWAY_HEADER_TIMEOUT; a body read may wait GATEWAY_BODY_READ_TIMEOUT for data and the whole
# body must arrive within GATEWAY_BODY_TIMEOUT (else 408). At most GATEWAY_MAX_WAITING_CONNECTIONS
# connections per worker wait for a request head; past that the oldest is closed. A body the call
# did not read is dropped up to GATEWAY_DRAIN_MAX_BYTES, then the connection is closed.
GATEWAY_HEADER_TIMEOUT = env.float("GATEWAY_HEADER_TIMEOUT", default=10.0)
GATEWAY_BODY_READ_TIMEOUT = env.float("GATEWAY_BODY_READ_TIMEOUT", default=10.0)
GATEWAY_BODY_TIMEOUT = env.float("GATEWAY_BODY_TIMEOUT", default=60.0)
GATEWAY_MAX_WAITING_CONNECTIONS = env.int("GATEWAY_MAX_WAITING_CONNECTIONS", default=1000)
GATEWAY_DRAIN_MAX_BYTES = env.int("GATEWAY_DRAIN_MAX_BYTES", default=16 * 1024 * 1024)

# gunicorn's worker count (gunicorn.conf.py reads it too; unset there: one per core with Redis, else
# 1). Several workers without Redis each count quotas on their own: refused at start unless
# GATEWAY_ALLOW_WORKERS_WITHOUT_REDIS accepts it (gateway_project/checks.py).
GATEWAY_WORKERS = env.int("GATEWAY_WORKERS", default=1)
GATEWAY_ALLOW_WORKERS_WITHOUT_REDIS = env.bool("GATEWAY_ALLOW_WORKERS_WITHOUT_REDIS", default=False)

# Jobs (jobs/): calls queued with `Prefer: respond-async`, run by `manage.py jobs_worker`.
# The queue is django-tasks' database backend, in the same database as everything else.
TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend", "QUEUES": ["jobs", "webhooks"]}}
# A running job whose worker stops renewing its lease this long (killed, machine lost) is given to
# another worker; a worker renews every third of it.
GATEWAY_JOB_LEASE_SECONDS = env.float("GATEWAY_JOB_LEASE_SECONDS", default=30.0)
# Runs of one job at most (a lost worker or a 502/504 after the route's own retries use one).
GATEWAY_JOB_MAX_ATTEMPTS = env.int("GATEWAY_JOB_MAX_ATTEMPTS", default=3)
# A job that waits (its route's job cap reached, or every target's breaker open) is looked at
# again after this many seconds at the earliest.
GATEWAY_JOB_WAIT_SECONDS = env.float("GATEWAY_JOB_WAIT_SECONDS", default=1.0)
# How often an idle worker looks for work.
GATEWAY_JOB_POLL_SECONDS = env.float("GATEWAY_JOB_POLL_SECONDS", default=0.5)
# On SIGTERM a worker lets its running job finish for up to this long, then exits (the job is redelivered).
GATEWAY_JOB_SHUTDOWN_SECONDS = env.float("GATEWAY_JOB_SHUTDOWN_SECONDS", default=60.0)
# Jobs a key may have waiting or running at once, unless its plan (or the key) sets max_queued_jobs.
GATEWAY_JOB_MAX_QUEUED = env.int("GATEWAY_JOB_MAX_QUEUED", default=1000)
# The most a job keeps of the upstream's answer: a longer one fails the job (not retried) and is
# read no further, so a worker's memory stays bounded whatever the upstream sends.
GATEWAY_JOB_MAX_ANSWER_BYTES = env.int("GATEWAY_JOB_MAX_ANSWER_BYTES", default=16 * 1024 * 1024)
# An Idempotency-Key returns the job it created for this long (per API key).
GATEWAY_JOB_IDEMPOTENCY_SECONDS = env.int("GATEWAY_JOB_IDEMPOTENCY_SECONDS", default=24 * 3600)
# `manage.py prune_jobs` deletes finished jobs (and their results) older than this.
GATEWAY_JOB_RETENTION_DAYS = env.float("GATEWAY_JOB_RETENTION_DAYS", default=7.0)
# Webhooks (X-Callback-URL): hosts they may go to (empty: none), the signing secret, attempts.
GATEWAY_WEBHOOK_HOSTS = env.list("GATEWAY_WEBHOOK_HOSTS", default=[])
GATEWAY_WEBHOOK_SECRET = secret("GATEWAY_WEBHOOK_SECRET", default="")
if GATEWAY_WEBHOOK_HOSTS and not GATEWAY_WEBHOOK_SECRET:
    raise RuntimeError("GATEWAY_WEBHOOK_HOSTS is set but GATEWAY_WEBHOOK_SECRET is not: webhooks would go unsigned")
GATEWAY_WEBHOOK_MAX_ATTEMPTS = env.int("GATEWAY_WEBHOOK_MAX_ATTEMPTS", default=6)
GATEWAY_WEBHOOK_BACKOFF_SECONDS = env.float("GATEWAY_WEBHOOK_BACKOFF_SECONDS", default=5.0)
GATEWAY_WEBHOOK_TIMEOUT = env.float("GATEWAY_WEBHOOK_TIMEOUT", default=10.0)
# Budget alerts (docs/spend.md): the percentages of a budget whose crossing sends an alert, unless
# a key, team or route sets its own ("none": no alerts); where alerts go: a webhook (on
# GATEWAY_WEBHOOK_HOSTS, signed with a secret derived from GATEWAY_WEBHOOK_SECRET) and/or email
# addresses (through the mail settings below). Sent by the jobs workers, retried like webhooks.
GATEWAY_BUDGET_ALERT_THRESHOLDS = env.str("GATEWAY_BUDGET_ALERT_THRESHOLDS", default="50,80,100")
GATEWAY_BUDGET_ALERT_WEBHOOK = env.str("GATEWAY_BUDGET_ALERT_WEBHOOK", default="")
GATEWAY_BUDGET_ALERT_EMAILS = env.list("GATEWAY_BUDGET_ALERT_EMAILS", default=[])
# Outgoing mail (Django's own settings): budget alerts by email.
EMAIL_HOST = env.str("EMAIL_HOST", default="localhost")
EMAIL_PORT = env.int("EMAIL_PORT", default=25)
EMAIL_HOST_USER = env.str("EMAIL_HOST_USER", default="")
EMAIL_HOST_PASSWORD = secret("EMAIL_HOST_PASSWORD", default="")
EMAIL_USE_TLS = env.bool("EMAIL_USE_TLS", default=False)
EMAIL_USE_SSL = env.bool("EMAIL_USE_SSL", default=False)
EMAIL_TIMEOUT = env.float("EMAIL_TIMEOUT", default=10.0)
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="ai-gateway@localhost")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {
        # One JSON line per call; see proxy/recording.py.
        "gateway.access": {"handlers": ["console"], "level": "INFO", "propagate": False},
        "django.request": {"handlers": ["console"], "level": "ERROR", "propagate": False},
    },
}
