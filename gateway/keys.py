"""API keys: generation, hashing and the public prefix (pure logic; storage in db/keys.py)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string
from dataclasses import dataclass

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


@dataclass(frozen=True)
class KeyCheck:
    """A presented key still to be checked where the work is done (e.g. the router's identity
    read): its public prefix and SHA-256, never the key itself."""

    prefix: str
    digest: bytes

    @classmethod
    def of(cls, key: str) -> KeyCheck:
        return cls(public_prefix(key), digest(key))

    def encode(self) -> str:
        return f"{self.prefix}:{self.digest.hex()}"

    @classmethod
    def decode(cls, value: str) -> KeyCheck:
        """The inverse of `encode`; anything malformed becomes a check that never passes."""
        prefix, _, hexdigest = value.rpartition(":")
        try:
            return cls(prefix, bytes.fromhex(hexdigest))
        except ValueError:
            return cls("", b"")
