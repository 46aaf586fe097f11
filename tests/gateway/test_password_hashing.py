"""Admin passwords are hashed off the event loop that serves the proxied calls."""

import threading

import gevent
from django.contrib.auth.hashers import PBKDF2PasswordHasher, check_password, make_password
from django.test import override_settings

from gateway_project.hashers import ThreadedPBKDF2PasswordHasher, off_the_loop

PRODUCTION_HASHERS = ["gateway_project.hashers.ThreadedPBKDF2PasswordHasher"]


def test_the_loop_keeps_running_while_a_greenlet_hashes_a_password():
    hasher = ThreadedPBKDF2PasswordHasher()
    ticks = 0
    hashing = True

    def tick():
        nonlocal ticks
        while hashing:
            ticks += 1
            gevent.sleep(0)

    ticker = gevent.spawn(tick)
    signing_in = gevent.spawn(hasher.encode, "correct horse", "somesalt", 300_000)
    encoded = signing_in.get()
    hashing = False
    ticker.join()
    # In the loop, the hash would have held it from start to end: the ticker would not have run.
    assert ticks > 10
    assert encoded == PBKDF2PasswordHasher().encode("correct horse", "somesalt", 300_000)


def test_a_greenlet_hashes_in_another_thread_and_plain_code_in_its_own():
    assert gevent.spawn(off_the_loop, threading.get_ident).get() != threading.get_ident()
    assert off_the_loop(threading.get_ident) == threading.get_ident()


@override_settings(PASSWORD_HASHERS=PRODUCTION_HASHERS)
def test_hashes_keep_django_s_format_so_existing_passwords_verify():
    made_by_django = PBKDF2PasswordHasher().encode("s3cret-pass", "salt1234", 1000)
    assert check_password("s3cret-pass", made_by_django)
    assert not check_password("wrong", made_by_django)
    ours = gevent.spawn(make_password, "s3cret-pass").get()
    assert ours.startswith("pbkdf2_sha256$")
    assert gevent.spawn(check_password, "s3cret-pass", ours).get()
