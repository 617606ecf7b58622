"""Opaque cursors over (timestamp, id) keys, and the shared `limit`/`cursor` query model."""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any

import orjson
from pydantic import Field

from gateway.errors import BadRequest
from gateway.validation import Query


class Page(Query):
    limit: int = Field(default=50, ge=1, le=100)
    cursor: str | None = None


def encode(ts: datetime, row_id: str) -> str:
    raw = orjson.dumps([ts.isoformat(), row_id])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(cursor: str | None) -> tuple[datetime, str] | None:
    if not cursor:
        return None
    try:
        pad = "=" * (-len(cursor) % 4)
        ts, row_id = orjson.loads(base64.urlsafe_b64decode(cursor + pad))
        return datetime.fromisoformat(ts), str(row_id)
    except (ValueError, TypeError, orjson.JSONDecodeError):
        raise BadRequest(details=[{"field": "cursor", "message": "Invalid cursor"}]) from None


def page_of(rows: list[Any], limit: int, key: str = "created_at") -> tuple[list[Any], str | None]:
    """Callers fetch limit+1 rows; returns the page and the cursor of its last row if more exist."""
    if len(rows) > limit:
        rows = rows[:limit]
        last = rows[-1]
        return rows, encode(last[key], last["id"])
    return rows, None
