"""API key format: ``gw_<prefix>_<secret>``.

The prefix (8 hex characters) is shown in lists and used to find the key; only the SHA-256 of the
whole key is stored. The secret has 256 bits of entropy, so a plain hash is enough (no salt or
slow hash needed, unlike passwords).
"""

import hashlib
import hmac
import secrets

KEY_START = "gw_"
# Management API tokens have the same shape and hashing, with their own start so neither kind
# of secret can be mistaken for the other.
TOKEN_START = "gwm_"


def generate(start: str = KEY_START) -> tuple[str, str, str]:
    """A new key: (full key to show once, prefix, hash to store)."""
    prefix = secrets.token_hex(4)
    full = f"{start}{prefix}_{secrets.token_urlsafe(32)}"
    return full, prefix, hash_key(full)


def hash_key(full: str) -> str:
    return hashlib.sha256(full.encode()).hexdigest()


def prefix_of(full: str, start: str = KEY_START) -> str | None:
    """The lookup prefix of a well-formed key, or None."""
    if not full.startswith(start) or len(full) > 200:
        return None
    prefix, sep, rest = full[len(start) :].partition("_")
    if not sep or len(prefix) != 8 or not rest:
        return None
    return prefix


def matches(full: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_key(full), stored_hash)
