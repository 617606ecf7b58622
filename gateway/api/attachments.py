"""Inbox attachments: multipart upload (streamed, size-limited) and downloads."""

from __future__ import annotations

import asyncio
from pathlib import Path
from urllib.parse import quote

from aiohttp import BodyPartReader, web
from pydantic import BaseModel

from gateway.api.auth import workspace_of
from gateway.api.context import CTX
from gateway.api.openapi import endpoint
from gateway.api.responses import ok
from gateway.db import inbox as db
from gateway.errors import BadRequest, NotFound, PayloadTooLarge, UnsupportedMediaType
from gateway.inbox import attachments as att
from gateway.inbox.service import Deps
from gateway.storage import key_belongs_to

routes = web.RouteTableDef()

# Multipart framing (boundaries, part headers) on top of the file itself.
_MULTIPART_SLACK = 64 * 1024


class Uploaded(BaseModel):
    url: str
    key: str
    filename: str
    contentType: str
    size: int


@endpoint(routes, "POST", "/v1/inbox/attachments/upload", summary="Upload an attachment (field `file`)",
          tag="inbox", response=Uploaded, status=201)
async def upload(request: web.Request) -> web.Response:
    ws = await workspace_of(request)
    ctx = request.app[CTX]
    limit = ctx.settings.max_attachment_bytes
    if request.content_type != "multipart/form-data":
        raise UnsupportedMediaType("Content-Type must be multipart/form-data")
    if request.content_length is not None and request.content_length > limit + _MULTIPART_SLACK:
        raise PayloadTooLarge(f"The file exceeds {limit} bytes")
    try:
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if isinstance(part, BodyPartReader) and part.name == "file":
                row = await att.store_upload(
                    ctx.pool, Deps.of(ctx).storage, ws, part, part.filename,
                    part.headers.get("Content-Type"), limit,
                )
                break
            if isinstance(part, BodyPartReader):
                await part.release()
        else:
            raise BadRequest(details=[{"field": "file", "message": "Field required"}])
    except (ValueError, AssertionError) as exc:  # aiohttp's multipart parser on malformed input
        raise BadRequest(f"Malformed multipart body: {exc}") from None
    return ok({
        "url": f"{ctx.settings.public_url}/v1/inbox/attachments/{row['key']}",
        "key": row["key"],
        "filename": row["filename"],
        "contentType": row["content_type"],
        "size": row["size"],
    }, 201)


@endpoint(routes, "GET", "/v1/inbox/{id}/attachments/{n}", summary="Download a conversation's attachment",
          tag="inbox", envelope="none")
async def download_nth(request: web.Request) -> web.StreamResponse:
    ws = await workspace_of(request)
    pool = request.app[CTX].pool
    conv_id, n = request.match_info["id"], request.match_info["n"]
    if await db.get_conversation(pool, ws, conv_id) is None:
        raise NotFound("Conversation not found")
    if not n.isdigit():
        raise NotFound("Attachment not found")
    row = await db.conversation_attachment(pool, conv_id, int(n))
    if row is None:
        raise NotFound("Attachment not found")
    return await _stream(request, row["key"], row["filename"], row["content_type"])


@endpoint(routes, "GET", "/v1/inbox/attachments/{key:.+}",
          summary="Download an upload by its key", tag="inbox", envelope="none")
async def download_key(request: web.Request) -> web.StreamResponse:
    ws = await workspace_of(request)
    key = request.match_info["key"]
    row = await db.attachment_by_key(request.app[CTX].pool, ws, key) if key_belongs_to(key, ws) else None
    if row is None:
        raise NotFound("Attachment not found")
    return await _stream(request, row["key"], row["filename"], row["content_type"])


def _disposition(filename: str) -> str:
    ascii_name = filename.encode("ascii", "replace").decode().replace("\\", "_").replace('"', "_")
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename, safe='')}"


async def _stream(request: web.Request, key: str, filename: str, content_type: str) -> web.StreamResponse:
    storage = Deps.of(request.app[CTX]).storage
    path = att.storage_path(storage, key)
    headers = {"Content-Type": content_type, "Content-Disposition": _disposition(filename)}
    if path is None:
        try:
            data = await storage.get(key)
        except (FileNotFoundError, KeyError):
            raise NotFound("Attachment not found") from None
        return web.Response(body=data, headers=headers)
    if not await asyncio.to_thread(path.is_file):
        raise NotFound("Attachment not found")
    response = web.StreamResponse(headers=headers)
    response.content_length = (await asyncio.to_thread(path.stat)).st_size
    await response.prepare(request)
    handle = await asyncio.to_thread(Path.open, path, "rb")
    try:
        while chunk := await asyncio.to_thread(handle.read, att.CHUNK):
            await response.write(chunk)
    finally:
        handle.close()
    await response.write_eof()
    return response
