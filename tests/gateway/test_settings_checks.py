"""Settings outside their set or range refuse to start, naming the setting and what it may be:
Django's system checks (gateway_project/checks.py), run by every management command and by each
gunicorn worker before it serves."""

import subprocess
import sys
from datetime import timedelta

import pytest
from django.core.checks import run_checks

from gateway_project import checks
from tests.servers import ROOT


def problems() -> list:
    return run_checks(tags=[checks.TAG])


def messages() -> list[str]:
    return [f"{p.id} {p.msg}" for p in problems()]


def test_the_test_settings_pass():
    assert problems() == []


def test_a_mistyped_cache_failure_mode_is_refused_not_read_as_open(settings):
    settings.GATEWAY_CACHE_FAILURE = "Closed"
    assert messages() == ["gateway.E001 GATEWAY_CACHE_FAILURE is 'Closed'; it must be one of: open, closed."]
    settings.GATEWAY_CACHE_FAILURE = "closed"
    assert problems() == []


def bad_value(setting: str, allowed: checks.Range):
    value = allowed.minimum if allowed.above else allowed.minimum - 1
    return timedelta(minutes=value) if setting == "AXES_COOLOFF_TIME" else value


@pytest.mark.parametrize("setting", sorted(checks.RANGES))
def test_each_range_refuses_a_value_below_it(setting, settings, monkeypatch):
    variable, allowed = checks.RANGES[setting]
    monkeypatch.delenv(variable, raising=False)
    setattr(settings, setting, bad_value(setting, allowed))
    if setting == "GATEWAY_WORKERS":  # 0 workers: the range alone, not the Redis rule
        settings.REDIS_URL = "redis://127.0.0.1:6379/0"
    found = messages()
    assert len(found) == 1 and found[0].startswith(f"gateway.E002 {variable} is "), found
    assert "it must be" in found[0]


def test_a_float_that_is_not_finite_is_refused(settings):
    settings.GATEWAY_BODY_TIMEOUT = float("inf")
    assert messages() == ["gateway.E002 GATEWAY_BODY_TIMEOUT is inf; it must be a finite number."]


def test_the_message_shows_the_value_as_the_environment_wrote_it(settings, monkeypatch):
    monkeypatch.setenv("GATEWAY_SIGNIN_COOLOFF_MINUTES", "0")
    settings.AXES_COOLOFF_TIME = timedelta(0)
    assert messages() == ["gateway.E002 GATEWAY_SIGNIN_COOLOFF_MINUTES is '0'; it must be above 0."]


@pytest.mark.parametrize("variable", checks.SWITCHES)
def test_an_on_off_switch_with_an_unknown_word_is_refused(variable, monkeypatch):
    monkeypatch.setenv(variable, "ture")
    assert messages() == [f"gateway.E001 {variable} is 'ture'; it must be one of: {', '.join(checks.SWITCH_WORDS)}."]
    monkeypatch.setenv(variable, "Off")
    assert problems() == []


@pytest.mark.parametrize("variable", sorted(checks.SERVER_CHOICES))
def test_a_server_setting_outside_its_values_is_refused(variable, monkeypatch):
    monkeypatch.setenv(variable, "verbose")
    found = messages()
    assert len(found) == 1 and found[0].startswith(f"gateway.E001 {variable} is 'verbose'; it must be one of: ")
    monkeypatch.setenv(variable, checks.SERVER_CHOICES[variable][0])
    assert problems() == []


@pytest.mark.parametrize("variable", sorted(checks.SERVER_RANGES))
def test_a_server_number_outside_its_range_is_refused(variable, monkeypatch):
    monkeypatch.setenv(variable, "-1")
    found = messages()
    assert len(found) == 1 and found[0].startswith(f"gateway.E002 {variable} is '-1'; it must be at least"), found
    monkeypatch.setenv(variable, "lots")
    assert messages() == [f"gateway.E002 {variable} is 'lots'; it must be a whole number."]


def test_several_workers_without_redis_are_refused_with_the_ways_out(settings):
    settings.REDIS_URL = ""
    settings.GATEWAY_WORKERS = 4
    [problem] = problems()
    assert problem.id == "gateway.E003" and problem.is_serious()
    assert "GATEWAY_WORKERS is 4 but REDIS_URL is not set" in problem.msg and "4 times over" in problem.msg
    assert "REDIS_URL" in problem.hint and "GATEWAY_WORKERS=1" in problem.hint


def test_several_workers_without_redis_when_accepted_are_a_warning(settings):
    settings.REDIS_URL = ""
    settings.GATEWAY_WORKERS = 4
    settings.GATEWAY_ALLOW_WORKERS_WITHOUT_REDIS = True
    [problem] = problems()
    assert problem.id == "gateway.W003" and not problem.is_serious()


def test_several_workers_with_redis_or_one_without_pass(settings):
    settings.GATEWAY_WORKERS, settings.REDIS_URL = 4, "redis://127.0.0.1:6379/0"
    assert problems() == []
    settings.GATEWAY_WORKERS, settings.REDIS_URL = 1, ""
    assert problems() == []


# The real start-up paths: gunicorn (gateway_project/worker.py) and manage.py (make run's migrate).


def server_env(tmp_path, **extra) -> dict:
    import os

    env = {k: v for k, v in os.environ.items() if k not in ("DJANGO_SETTINGS_MODULE", "REDIS_URL")}
    return {
        **env,
        "SECRET_KEY": "settings-check-secret",
        "GATEWAY_DOT_ENV": "",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "GATEWAY_BIND": "127.0.0.1:0",  # the kernel picks a port: the server stops before it serves
        **extra,
    }


@pytest.mark.slow
def test_gunicorn_prints_the_message_and_stops(tmp_path):
    env = server_env(tmp_path, GATEWAY_CACHE_FAILURE="Closed")
    done = subprocess.run(
        [sys.executable, "-m", "gunicorn", "--config", "gateway_project/gunicorn.conf.py", "gateway_project.wsgi"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    log = done.stdout + done.stderr
    assert done.returncode == 3, log  # gunicorn's "worker failed to boot"
    assert "gateway.E001: GATEWAY_CACHE_FAILURE is 'Closed'; it must be one of: open, closed." in log
    assert "Worker failed to boot" in log


@pytest.mark.slow
def test_manage_py_refuses_to_run_with_the_message(tmp_path):
    env = server_env(tmp_path, GATEWAY_WORKERS="2")
    done = subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "gateway.E003" in done.stderr and "GATEWAY_WORKERS is 2 but REDIS_URL is not set" in done.stderr
    assert "Applying" not in done.stdout
