"""Attachments of the inbox: streamed uploads, upload references checked and bound to messages."""

from __future__ import annotations

import mimetypes
import os
import secrets
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import asyncpg

from gateway.db import inbox as db
from gateway.errors import BadRequest, Forbidden, PayloadTooLarge
from gateway.ids import new_id
from gateway.inbox.models import AttachmentRef
from gateway.storage import Storage, key_belongs_to, new_key, safe_filename

CHUNK = 64 * 1024


class ChunkReader(Protocol):
    async def read_chunk(self, size: int = ...) -> bytes: ...


def guess_type(filename: str, declared: str | None) -> str:
    declared = (declared or "").split(";")[0].strip().lower()
    if declared and declared != "application/octet-stream" and "/" in declared:
        return declared
    return mimetypes.guess_type(filename)[0] or "application/octet-stream"


async def store_upload(
    conn: asyncpg.Pool | asyncpg.Connection,
    storage: Storage,
    workspace_id: str,
    part: ChunkReader,
    filename: str | None,
    content_type: str | None,
    limit: int,
) -> dict[str, Any]:
    """Stream one upload into storage, refusing it (413) as soon as it passes `limit` bytes."""
    name = safe_filename(filename)
    key = new_key(workspace_id, name)
    target = storage.path(key)
    size = 0
    if target is not None:
        # A directory store: write chunk by chunk to a temporary file, then rename into place.
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.part")
        try:
            with tmp.open("wb") as out:
                while chunk := await part.read_chunk(CHUNK):
                    size += len(chunk)
                    if size > limit:
                        raise PayloadTooLarge(f"The file exceeds {limit} bytes")
                    out.write(chunk)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
    else:
        buffer = bytearray()
        while chunk := await part.read_chunk(CHUNK):
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"The file exceeds {limit} bytes")
            buffer += chunk
        await storage.put(key, bytes(buffer))
    row = {
        "id": new_id("att"),
        "workspace_id": workspace_id,
        "key": key,
        "filename": name,
        "content_type": guess_type(name, content_type),
        "size": size,
    }
    await db.insert_attachment(conn, row)
    return row


async def check_refs(
    conn: asyncpg.Connection, workspace_id: str, refs: Sequence[AttachmentRef], field: str = "attachments"
) -> list[asyncpg.Record]:
    """403 for a key outside the caller's prefix, 400 for an unknown one; returns the upload rows."""
    foreign = [
        {"field": f"{field}[{i}].key", "message": "Key does not belong to this workspace"}
        for i, ref in enumerate(refs) if not key_belongs_to(ref.key, workspace_id)
    ]
    if foreign:
        raise Forbidden("An attachment key is outside this workspace's uploads", details=foreign)
    rows, unknown = [], []
    for i, ref in enumerate(refs):
        row = await db.attachment_by_key(conn, workspace_id, ref.key)
        if row is None:
            unknown.append({"field": f"{field}[{i}].key", "message": "Unknown attachment key"})
        else:
            rows.append(row)
    if unknown:
        raise BadRequest(details=unknown)
    return rows


async def bind_uploads(
    conn: asyncpg.Connection, storage: Storage, workspace_id: str, conv_id: str, message_id: str,
    refs: Sequence[AttachmentRef], rows: Sequence[asyncpg.Record], start: int = 0,
) -> int:
    """Attach checked uploads to a message: the upload row itself the first time, a copy after."""
    position = start
    for ref, row in zip(refs, rows, strict=True):
        filename = safe_filename(ref.filename) if ref.filename else None
        if not await db.claim_upload(conn, row["id"], message_id, conv_id, position, filename):
            await copy_attachment(conn, storage, workspace_id, row, conv_id, message_id, position, filename)
        position += 1
    return position


async def copy_attachment(
    conn: asyncpg.Connection, storage: Storage, workspace_id: str, source: asyncpg.Record,
    conv_id: str, message_id: str, position: int, filename: str | None = None,
) -> None:
    """A new row (and file: keys are unique) carrying the same bytes, linked to another message."""
    name = filename or safe_filename(source["filename"])
    key = new_key(workspace_id, name)
    await storage.put(key, await storage.get(source["key"]))
    await db.insert_attachment(conn, {
        "id": new_id("att"),
        "workspace_id": workspace_id,
        "key": key,
        "filename": name,
        "content_type": source["content_type"],
        "size": source["size"],
        "message_id": message_id,
        "conversation_id": conv_id,
        "position": position,
    })


def storage_path(storage: Storage, key: str) -> Path | None:
    try:
        return storage.path(key)
    except ValueError:
        return None
