"""API keys of feeds that post over HTTP. Pure functions.

A key is 32 random bytes (``secrets``), shown once when it is created; intake keeps only its
SHA-256. A slow password hash is not needed: the key has 256 bits of entropy, so its hash
cannot be reversed by guessing.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

PREFIX = "cwk_"


def new_api_key() -> str:
    """A fresh API key (``cwk_`` and 43 URL-safe characters)."""
    return PREFIX + secrets.token_urlsafe(32)


def api_key_hash(key: str) -> str:
    """The SHA-256 (hex) that intake stores for ``key``."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def key_matches(key: str, stored_hash: str) -> bool:
    """Constant-time comparison of a presented key with a stored hash."""
    return hmac.compare_digest(api_key_hash(key), stored_hash)

