"""Idempotency for sends: `Idempotency-Key` (HTTP) or `message_id` (AMQP), scoped to the identity.

Design — the router decides, the API only claims:

* The **router** is the single authority. The one statement that writes conversation,
  message and outbox rows (`db.messages.record_send`, inside the transaction that reserved
  the caps) also records the answer under the key (`state = 'done'`, status and body). It
  may only take a key that is absent, expired, or claimed `processing` with the same body.
  Two commands with one key — two API requests, a redelivery, two router processes — meet
  on that row: the later one waits for the earlier commit, finds `done`, rolls its whole
  transaction back (caps included) and answers the stored result with
  `Idempotent-Replayed: true`. So a key sends at most once, whatever happens on the API side.
* The router may write several sends of one identity in one transaction (a batch, see
  `gateway.send.handler.handle_batch`); a batch never holds two sends with the same key, and
  when one of its statements finds its key taken the whole batch rolls back and every send
  of it runs alone, as above. So batching changes when rows commit, never what is answered.
* The **API** claims the key first (`db.idempotency.claim_by_handle`, committed on its
  own, identity resolved in the same statement) only to answer quickly: a finished key is
  replayed (or 409 for a different body) without a round trip to the router, and a key
  claimed by a request still in flight is 409 "still being processed".
* A claim never blocks for long: when the RPC deadline passes (503) or the router answers
  an error (which is not stored, like a failed validation), the API releases its claim. A
  claim left by an API process that died is taken over once older than twice the RPC
  deadline (same body only). Taking over is safe because the router decides.
* So "router down → 503 → retry with the same key" sends once: if the first command is
  still queued, the retry publishes a second command; whichever the router handles first
  sends, the other replays. Commands from HTTP also carry a deadline header; the router
  skips a command whose caller was already told 503, so a keyless retry rarely doubles.
* Keyless HTTP requests are published with `message_id = api:<uuid>`, so a command the
  broker redelivers after a router crash is recognised the same way.
* Keys expire after 24 h (`expires_at`); an expired key is treated as absent and the router
  purges old rows periodically.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson

from gateway.db import idempotency as db
from gateway.errors import BadRequest, Conflict, NotFound

HEADER = "Idempotency-Key"
REPLAYED = "Idempotent-Replayed"
# Fields that carry routing, not content: the same send from HTTP and AMQP hashes alike.
_ENVELOPE = ("workspaceId", "identity")


def check_key(key: str, field: str = HEADER) -> str:
    """1–255 printable ASCII characters, else 400."""
    if not 1 <= len(key) <= 255 or not all(" " <= c <= "~" for c in key):
        raise BadRequest(
            details=[{"field": field, "message": "Must be 1-255 printable ASCII characters"}]
        )
    return key


def request_hash(body: dict[str, Any]) -> str:
    """SHA-256 of the canonical JSON (sorted keys, no envelope fields)."""
    content = {k: v for k, v in body.items() if k not in _ENVELOPE}
    return hashlib.sha256(orjson.dumps(content, option=orjson.OPT_SORT_KEYS)).hexdigest()


@dataclass(frozen=True)
class Stored:
    status: int
    body: Any


def different_body() -> Conflict:
    return Conflict("This Idempotency-Key was already used with a different request body")


def in_flight() -> Conflict:
    return Conflict("A request with this Idempotency-Key is still being processed")


async def begin(
    pool: asyncpg.Pool, workspace_id: str, handle: str, key: str, digest: str, stale_seconds: float
) -> tuple[str, Stored | None]:
    """API side: (identity id, None) when this request now owns the key; (id, the stored
    answer to replay); 409 for a different body or a request in flight; 404 no identity."""
    for _ in range(3):  # a claim may vanish between statements; bounded retry
        scope, claimed, row = await db.claim_by_handle(pool, workspace_id, handle, key, digest,
                                                       stale_seconds)
        if scope is None:
            raise NotFound("Identity not found")
        if claimed:
            return scope, None
        if row is None:
            continue
        if row.request_hash != digest:
            raise different_body()
        if row.state == "done" and row.response_status is not None:
            return scope, Stored(row.response_status, row.response_body)
        raise in_flight()
    raise in_flight()
