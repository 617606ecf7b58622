"""API keys: generation, hashing and the public prefix (pure logic; storage in db/keys.py)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string

PLATFORM_PREFIX = "sk_user_"
WORKSPACE_PREFIX = "sk_"
_ALPHABET = string.ascii_letters + string.digits
_BODY_LEN = 40  # 40 base62 chars ≈ 238 random bits
_PUBLIC_LEN = 8  # characters of the body that form the public prefix


def generate(kind: str) -> str:
    head = PLATFORM_PREFIX if kind == "platform" else WORKSPACE_PREFIX
    return head + "".join(secrets.choice(_ALPHABET) for _ in range(_BODY_LEN))


def kind_of(key: str) -> str | None:
    if key.startswith(PLATFORM_PREFIX):
        return "platform"
    if key.startswith(WORKSPACE_PREFIX):
        return "workspace"
    return None


def public_prefix(key: str) -> str:
    head = PLATFORM_PREFIX if key.startswith(PLATFORM_PREFIX) else WORKSPACE_PREFIX
    return key[: len(head) + _PUBLIC_LEN]


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def matches(key: str, stored: bytes) -> bool:
    return hmac.compare_digest(digest(key), stored)


def well_formed(key: str) -> bool:
    kind = kind_of(key)
    if kind is None:
        return False
    head = PLATFORM_PREFIX if kind == "platform" else WORKSPACE_PREFIX
    body = key[len(head) :]
    return len(body) == _BODY_LEN and all(c in _ALPHABET for c in body)
