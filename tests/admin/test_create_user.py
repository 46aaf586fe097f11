"""`manage.py create_user USERNAME --role ROLE` for scripts and the README."""

from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError

from routes_admin import roles

pytestmark = pytest.mark.django_db

User = get_user_model()


def create_user(*args):
    out = StringIO()
    call_command("create_user", *args, stdout=out)
    return out.getvalue()


def test_creates_a_staff_user_in_the_role_with_the_password_from_the_environment(monkeypatch, client):
    monkeypatch.setenv("AUDITOR_PASSWORD", "a long and uncommon passphrase 7")
    out = create_user(
        "aude", "--role", "Auditor", "--email", "aude@example.com", "--password-from-env", "AUDITOR_PASSWORD"
    )
    assert "Created Auditor 'aude'" in out
    user = User.objects.get(username="aude")
    assert user.is_staff and not user.is_superuser and user.email == "aude@example.com"
    assert roles.user_role(user) == "Auditor"
    assert "passphrase" not in user.password  # hashed
    assert user.check_password("a long and uncommon passphrase 7")
    client.force_login(user)  # client.login() has no request for the sign-in lockout (django-axes)
    assert client.get("/admin/routes_admin/route/").status_code == 200
    assert client.get("/admin/routes_admin/route/add/").status_code == 403


def test_no_password_makes_an_unusable_one():
    create_user("robot", "--role", "Operator", "--no-password")
    user = User.objects.get(username="robot")
    assert not user.has_usable_password() and roles.user_role(user) == "Operator"


def test_without_a_terminal_or_a_password_option_it_refuses(monkeypatch):
    monkeypatch.setattr("sys.stdin", StringIO(""))  # not a TTY
    with pytest.raises(CommandError, match="--password-from-env"):
        create_user("x", "--role", "Admin")
    assert not User.objects.filter(username="x").exists()


def test_it_refuses_an_unknown_role_a_taken_name_a_weak_or_missing_password(monkeypatch):
    with pytest.raises(CommandError, match="invalid choice"):
        create_user("x", "--role", "Root", "--no-password")
    create_user("taken", "--role", "Admin", "--no-password")
    with pytest.raises(CommandError, match="exists already"):
        create_user("taken", "--role", "Auditor", "--no-password")
    monkeypatch.setenv("WEAK", "password")
    with pytest.raises(CommandError, match="too common"):
        create_user("weak", "--role", "Auditor", "--password-from-env", "WEAK")
    with pytest.raises(CommandError, match="not set"):
        create_user("weak", "--role", "Auditor", "--password-from-env", "UNSET_VARIABLE_H6A")
    assert not User.objects.filter(username__in=["x", "weak"]).exists()
