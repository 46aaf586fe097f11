"""Production settings pass `manage.py check --deploy` with no warning, from the environment alone."""

import os
import secrets
import subprocess
import sys

import pytest

from tests.servers import ROOT

pytestmark = pytest.mark.slow  # each check is manage.py in a process of its own

PRODUCTION = {
    "SECRET_KEY": secrets.token_urlsafe(50),
    "HTTPS": "1",
    "ALLOWED_HOSTS": "gateway.example.com",
    "DATABASE_URL": "postgres://gateway@db.example.com:5432/gateway",
    "REDIS_URL": "redis://cache.example.com:6379/0",
}


def check_deploy(**env) -> subprocess.CompletedProcess:
    """`manage.py check --deploy` with only these variables (and no .env file's help)."""
    clean = {
        "PATH": os.environ["PATH"],
        "DJANGO_SETTINGS_MODULE": "gateway_project.settings",
        "GATEWAY_DOT_ENV": "",
        **env,
    }
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=clean,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_production_settings_pass_the_deploy_check_without_warning():
    result = check_deploy(**PRODUCTION)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_the_deploy_check_fails_without_https():
    result = check_deploy(**{**PRODUCTION, "HTTPS": "0"})
    assert result.returncode != 0
    assert "security.W008" in result.stderr  # SECURE_SSL_REDIRECT
    assert "security.W004" in result.stderr  # HSTS


def test_the_deploy_check_fails_with_debug_on():
    result = check_deploy(**{**PRODUCTION, "DEBUG": "1"})
    assert result.returncode != 0
    assert "security.W018" in result.stderr


def test_a_weak_secret_key_is_reported():
    result = check_deploy(**{**PRODUCTION, "SECRET_KEY": "short"})
    assert result.returncode != 0
    assert "security.W009" in result.stderr


def test_production_refuses_to_start_without_a_secret_key():
    env = {k: v for k, v in PRODUCTION.items() if k != "SECRET_KEY"}
    result = check_deploy(**env)
    assert result.returncode != 0
    assert "SECRET_KEY is not set" in result.stderr
