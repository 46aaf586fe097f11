"""Test settings: the real settings with fast, isolated defaults.

SQLite in memory unless DATABASE_URL is set; the in-process cache unless REDIS_URL is set.
"""

import os
import tempfile

os.environ.setdefault("SECRET_KEY", "tests-only-secret-key")


def redis_url_of_this_worker(url: str, worker: str) -> str:
    """Under pytest-xdist each worker empties its Redis database between tests (cache.clear() is
    FLUSHDB), so each gets its own: REDIS_URL's database number plus the worker's index."""
    if not url or not worker.startswith("gw"):
        return url
    base, _, number = url.rpartition("/")
    return f"{base}/{int(number or 0) + int(worker[2:])}"


# Set in the environment too: the real servers the tests start inherit it.
if os.environ.get("REDIS_URL"):
    os.environ["REDIS_URL"] = redis_url_of_this_worker(
        os.environ["REDIS_URL"], os.environ.get("PYTEST_XDIST_WORKER", "")
    )

from gateway_project.settings import *  # noqa: E402,F403
from gateway_project.settings import DATABASES, REDIS_URL  # noqa: E402

if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"] = {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}
else:
    # Django empties the test database with TRUNCATE between transactional tests; the change
    # history refuses it unless the session allows it (migration 0012_history_no_truncate).
    DATABASES["default"]["OPTIONS"]["options"] = "-c gateway.allow_history_truncate=on"

if REDIS_URL:
    CACHES["default"]["KEY_PREFIX"] = f"gwtest{os.getpid()}"  # noqa: F405

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# The same WhiteNoise, scanning the static folders once per run instead of once per test client.
MIDDLEWARE = [  # noqa: F405
    "tests.static_files.WhiteNoiseMiddleware" if name == "whitenoise.middleware.WhiteNoiseMiddleware" else name
    for name in MIDDLEWARE  # noqa: F405
]
GATEWAY_CONFIG_TTL = 0  # every call sees the configuration the test just saved
GATEWAY_LOG_FLUSH_SECONDS = 0  # rows are written when the call finishes
GATEWAY_LOG_SPOOL_DIR = tempfile.mkdtemp(prefix="gateway-test-spool-")  # never the checkout's var/
LOGGING["loggers"]["gateway.access"]["level"] = "WARNING"  # noqa: F405
