"""Admin sign-in: too many wrong passwords lock the real client address out (django-axes)."""

import pytest
from django.contrib.auth.models import User
from django.test import Client, override_settings

PASSWORD = "the-right-password-1"
LIMIT = 5


@pytest.fixture
def admin_user(db):
    return User.objects.create_superuser("admin", "admin@example.com", PASSWORD)


def sign_in(password: str, remote_addr: str = "198.51.100.7", forwarded_for: str | None = None):
    """One sign-in attempt on a fresh client (no cookie carries state between attempts)."""
    extra = {"REMOTE_ADDR": remote_addr}
    if forwarded_for is not None:
        extra["HTTP_X_FORWARDED_FOR"] = forwarded_for
    return Client().post(
        "/admin/login/?next=/admin/", {"username": "admin", "password": password, "next": "/admin/"}, **extra
    )


def signed_in(response) -> bool:
    return response.status_code == 302 and response["Location"] == "/admin/"


@override_settings(AXES_FAILURE_LIMIT=LIMIT)
def test_the_right_password_is_refused_after_too_many_wrong_ones(admin_user):
    for _ in range(LIMIT - 1):
        assert sign_in("wrong").status_code == 200  # the form again, with its error
    assert sign_in("wrong").status_code == 429  # the one that reaches the limit
    refused = sign_in(PASSWORD)
    assert not signed_in(refused)
    assert refused.status_code == 429
    assert refused["Content-Type"].startswith("text/html")
    page = refused.content.decode()
    assert "Too many failed sign-ins" in page
    assert "<html" in page and '"failure_limit"' not in page  # a page, not a JSON blob


@override_settings(AXES_FAILURE_LIMIT=LIMIT)
def test_below_the_limit_the_right_password_still_signs_in(admin_user):
    for _ in range(LIMIT - 1):
        sign_in("wrong")
    assert signed_in(sign_in(PASSWORD))


@override_settings(AXES_FAILURE_LIMIT=LIMIT)
def test_another_address_is_not_locked_out(admin_user):
    for _ in range(LIMIT):
        sign_in("wrong", remote_addr="198.51.100.7")
    assert not signed_in(sign_in(PASSWORD, remote_addr="198.51.100.7"))
    assert signed_in(sign_in(PASSWORD, remote_addr="198.51.100.8"))


@override_settings(AXES_FAILURE_LIMIT=LIMIT, TRUSTED_PROXY_COUNT=0)
def test_without_trusted_proxies_a_forged_forwarded_for_changes_nothing(admin_user):
    # Each attempt claims another address: the lockout still counts them all against the socket's.
    for n in range(LIMIT):
        sign_in("wrong", forwarded_for=f"203.0.113.{n}")
    assert not signed_in(sign_in(PASSWORD, forwarded_for="203.0.113.200"))
    # And claiming the attacker's address does not lock anyone else out.
    for _ in range(LIMIT):
        sign_in("wrong", remote_addr="198.51.100.9", forwarded_for="198.51.100.10")
    assert signed_in(sign_in(PASSWORD, remote_addr="198.51.100.10"))


@override_settings(AXES_FAILURE_LIMIT=LIMIT, TRUSTED_PROXY_COUNT=1)
def test_behind_one_trusted_proxy_the_address_it_saw_is_the_key(admin_user):
    proxy = "10.0.0.2"
    # The attacker prepends whatever it likes; the proxy appends the address it really saw.
    for n in range(LIMIT):
        sign_in("wrong", remote_addr=proxy, forwarded_for=f"192.0.2.{n}, 203.0.113.5")
    assert not signed_in(sign_in(PASSWORD, remote_addr=proxy, forwarded_for="203.0.113.5"))
    # Another client behind the same proxy signs in, even when the attacker names it in its header.
    assert signed_in(sign_in(PASSWORD, remote_addr=proxy, forwarded_for="203.0.113.6"))
    for _ in range(LIMIT):
        sign_in("wrong", remote_addr=proxy, forwarded_for="203.0.113.7, 203.0.113.8")
    assert signed_in(sign_in(PASSWORD, remote_addr=proxy, forwarded_for="203.0.113.7"))
