"""A new key's secret, kept between the admin's POST and the page that shows it once.

The admin redirects after issuing or rotating a key (so a reload issues nothing), and the secret
waits in the session for that page. Sessions are stored in the database (base64 + zlib, readable
by anyone who reads the table or a backup) for up to two weeks, so the secret is kept there only
sealed, for SHOWN_ONCE_SECONDS at most, and removed when shown:

- the one-time token in the page's URL is not stored: the session holds its SHA-256 (the slot);
- the seal's key is derived from that token and SECRET_KEY (`salted_hmac`), so the session row
  alone, or the row and the access log's URLs, give nothing without SECRET_KEY;
- the seal is HMAC-SHA256 in counter mode (a keystream XORed with the secret, a fresh key per
  secret so no keystream is reused) and an HMAC-SHA256 tag over the result (encrypt-then-MAC).
  The standard library has no cipher; `cryptography` is not a dependency of the gateway.
"""

import base64
import hashlib
import hmac
import secrets
import time

from django.utils.crypto import salted_hmac

SESSION_KEY = "issued_keys"
SHOWN_ONCE_SECONDS = 600  # the redirect follows at once; a page left unopened longer loses its secret
SALT = "routes_admin.shown_once"
TAG_BYTES = 16


def _key(token: str) -> bytes:
    return salted_hmac(SALT, token, algorithm="sha256").digest()


def _slot(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()[:32]


def _keystream(key: bytes, length: int) -> bytes:
    blocks = (hmac.new(key, b"stream%d" % i, hashlib.sha256).digest() for i in range(length // 32 + 1))
    return b"".join(blocks)[:length]


def _tag(key: bytes, sealed: bytes) -> bytes:
    return hmac.new(key, b"tag" + sealed, hashlib.sha256).digest()[:TAG_BYTES]


def seal(token: str, secret: str) -> str:
    key = _key(token)
    plain = secret.encode()
    sealed = bytes(a ^ b for a, b in zip(plain, _keystream(key, len(plain)), strict=True))
    return base64.b64encode(sealed + _tag(key, sealed)).decode()


def unseal(token: str, box: str) -> str | None:
    """The secret, or None when the box was not sealed with this token and this SECRET_KEY."""
    key = _key(token)
    try:
        raw = base64.b64decode(box, validate=True)
    except ValueError:
        return None
    sealed, tag = raw[:-TAG_BYTES], raw[-TAG_BYTES:]
    if not hmac.compare_digest(tag, _tag(key, sealed)):
        return None
    return bytes(a ^ b for a, b in zip(sealed, _keystream(key, len(sealed)), strict=True)).decode()


def _pending(session, now: float) -> dict:
    """The session's waiting secrets, those past their time dropped."""
    pending = {slot: item for slot, item in session.get(SESSION_KEY, {}).items() if item.get("until", 0) > now}
    session[SESSION_KEY] = pending  # also marks the session modified
    return pending


def keep(session, key_id: int, secret: str, now: float | None = None) -> str:
    """Seal the secret in the session; returns the one-time token for the page that shows it."""
    now = time.time() if now is None else now
    token = secrets.token_urlsafe(16)
    _pending(session, now)[_slot(token)] = {
        "key": key_id,
        "box": seal(token, secret),
        "until": now + SHOWN_ONCE_SECONDS,
    }
    return token


def take(session, key_id: int, token: str, now: float | None = None) -> str | None:
    """The secret waiting under this token for this key, removed from the session; None when it
    was shown already, has expired, or belongs to another key or session."""
    now = time.time() if now is None else now
    item = _pending(session, now).pop(_slot(token), None)
    if item is None or item.get("key") != key_id:
        return None
    return unseal(token, item["box"])
