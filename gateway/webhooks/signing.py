"""Standard Webhooks signing (secrets, `webhook-signature`, request headers)."""

from __future__ import annotations

import base64
import secrets as _secrets
import time
from collections.abc import Sequence
from datetime import UTC, datetime

from standardwebhooks.webhooks import Webhook

SECRET_PREFIX = "whsec_"
# 32 bytes = a full HMAC-SHA256 block of key material; the spec allows 24-64.
_SECRET_BYTES = 32


def new_secret() -> str:
    """Return a fresh signing secret, `whsec_` + standard base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(_secrets.token_bytes(_SECRET_BYTES)).decode("ascii")


def validate_secret(secret: str) -> None:
    """Raise ValueError unless `secret` is a `whsec_` secret the signer accepts."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError("webhook secret must start with 'whsec_'")
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except ValueError as exc:
        raise ValueError("webhook secret is not valid base64") from exc
    if not 24 <= len(key) <= 64:
        raise ValueError("webhook secret must encode 24 to 64 bytes")


class Signer:
    """Signs for one endpoint with the `standardwebhooks` package; the secrets are decoded
    once (one `Webhook` per secret), not per attempt.

    The spec's published test vector is a unit test.
    """

    __slots__ = ("_hooks",)

    def __init__(self, secrets: Sequence[str]) -> None:
        if not secrets:
            raise ValueError("at least one secret is required to sign")
        self._hooks = tuple(Webhook(s) for s in secrets)

    def signature(self, msg_id: str, timestamp: int, body: bytes) -> str:
        """The `webhook-signature` value: one `v1,<sig>` per secret, space-separated.

        During a rotation overlap the signer holds the new and the old secret; receivers
        accept the request when any one signature matches. The package signs text; our
        bodies are JSON, hence UTF-8 (strict: a non-UTF-8 body would be signed differently
        by receivers that read bytes).
        """
        data = body.decode("utf-8")
        when = datetime.fromtimestamp(timestamp, tz=UTC)
        return " ".join(hook.sign(msg_id=msg_id, timestamp=when, data=data) for hook in self._hooks)

    def headers(self, msg_id: str, body: bytes, now: int | None = None) -> dict[str, str]:
        """The request headers for one delivery attempt.

        `msg_id` is the event id (stable across retries); the timestamp is taken fresh per
        attempt (`now`, seconds since the epoch, defaults to the current time).
        """
        ts = int(time.time()) if now is None else now
        return {
            "webhook-id": msg_id,
            "webhook-timestamp": str(ts),
            "webhook-signature": self.signature(msg_id, ts, body),
            "content-type": "application/json",
        }


def sign(secrets: Sequence[str], msg_id: str, timestamp: int, body: bytes) -> str:
    """Return the `webhook-signature` value for `secrets` (see `Signer.signature`)."""
    return Signer(secrets).signature(msg_id, timestamp, body)


def headers(secrets: Sequence[str], msg_id: str, body: bytes, now: int | None = None) -> dict[str, str]:
    """Return the request headers for one delivery attempt (see `Signer.headers`)."""
    return Signer(secrets).headers(msg_id, body, now)
