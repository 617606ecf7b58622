"""Opaque, prefixed identifiers (conv_…, msg_…, forward_email_<ms>_<rand>…)."""

from __future__ import annotations

import secrets
import string
import time

_ALNUM = string.ascii_lowercase + string.digits


def new_id(prefix: str) -> str:
    """`prefix_` + 16 hex chars (64 random bits): unique enough for primary keys."""
    return f"{prefix}_{secrets.token_hex(8)}"


def job_id(kind: str) -> str:
    """`forward_email_<epoch-ms>_<7 random [a-z0-9]>` and alike."""
    rand = "".join(secrets.choice(_ALNUM) for _ in range(7))
    return f"{kind}_{int(time.time() * 1000)}_{rand}"
