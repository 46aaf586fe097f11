"""Test settings: the real settings with fast, isolated defaults.

SQLite in memory unless DATABASE_URL is set; the in-process cache unless REDIS_URL is set.
"""

import os
import tempfile

os.environ.setdefault("SECRET_KEY", "tests-only-secret-key")

from gateway_project.settings import *  # noqa: E402,F403
from gateway_project.settings import DATABASES, REDIS_URL  # noqa: E402

if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"] = {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}

if REDIS_URL:
    CACHES["default"]["KEY_PREFIX"] = f"gwtest{os.getpid()}"  # noqa: F405

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
GATEWAY_CONFIG_TTL = 0  # every call sees the configuration the test just saved
GATEWAY_LOG_FLUSH_SECONDS = 0  # rows are written when the call finishes
GATEWAY_LOG_SPOOL_DIR = tempfile.mkdtemp(prefix="gateway-test-spool-")  # never the checkout's var/
LOGGING["loggers"]["gateway.access"]["level"] = "WARNING"  # noqa: F405
