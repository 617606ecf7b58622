"""Mailboxes (setup API): SMTP/IMAP accounts; passwords are write-only and stored encrypted."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import asyncpg
from aiohttp import web
from pydantic import BaseModel, Field, ValidationError

from gateway.api.auth import workspace_of
from gateway.api.bodies import read_body, read_query
from gateway.api.context import CTX
from gateway.api.openapi import endpoint
from gateway.api.pagination import Page, decode, page_of
from gateway.api.responses import no_content, ok, ok_list
from gateway.crypto import Vault
from gateway.db import mailboxes as db
from gateway.errors import BadRequest, Conflict, NotFound
from gateway.logging import get_logger
from gateway.timefmt import iso, now
from gateway.validation import Body, Email, Name, error_details

routes = web.RouteTableDef()
log = get_logger(__name__)

Security = Literal["tls", "starttls", "none"]
Host = Annotated[str, Field(min_length=1, max_length=253, pattern=r"^[A-Za-z0-9._:\[\]-]+$")]
Port = Annotated[int, Field(ge=1, le=65535)]
Username = Annotated[str, Field(min_length=1, max_length=320)]
Password = Annotated[str, Field(min_length=1, max_length=1024)]
Cap = Annotated[int, Field(ge=0, le=1_000_000)]
DEFAULT_DAILY_CAP = 100


class ServerIn(Body):
    """An SMTP or IMAP account. `username` defaults to the mailbox address."""

    host: Host
    port: Port
    security: Security
    username: Username | None = None
    password: Password


class ServerPatch(Body):
    """Any part of an account; an omitted password keeps the stored one."""

    host: Host | None = None
    port: Port | None = None
    security: Security | None = None
    username: Username | None = None
    password: Password | None = None


class MailboxCreate(Body):
    email: Email
    fromName: Name | None = None
    smtp: ServerIn
    imap: ServerIn | None = None
    dailyCap: Cap = DEFAULT_DAILY_CAP
    status: Literal["active", "paused"] = "active"


class MailboxUpdate(Body):
    """Only the fields given change; `imap: null` removes the IMAP account."""

    email: Email | None = None
    fromName: Name | None = None
    smtp: ServerPatch | None = None
    imap: ServerPatch | None = None
    dailyCap: Cap | None = None
    status: Literal["active", "paused"] | None = None


class Server(BaseModel):
    host: Host
    port: Port
    security: Security
    username: Username


class Health(BaseModel):
    status: Literal["healthy", "unhealthy"]
    lastError: str | None
    consecutiveFailures: int
    bounceRate: float
    sentToday: int


class Mailbox(BaseModel):
    id: str
    email: str
    fromName: str | None
    smtp: Server
    imap: Server | None
    dailyCap: int
    status: Literal["active", "paused"]
    health: Health
    createdAt: str
    updatedAt: str


def view(row: asyncpg.Record) -> dict[str, Any]:
    """The public form of a mailbox row: no password, ever (the row has none to give)."""
    sent, bounced = row["sent_total"], row["bounced_total"]

    def server(s: dict[str, Any] | None) -> dict[str, Any] | None:
        if s is None:
            return None
        return {k: s.get(k) for k in ("host", "port", "security", "username")}

    return {
        "id": row["id"],
        "email": row["email"],
        "fromName": row["from_name"],
        "smtp": server(row["smtp"]),
        "imap": server(row["imap"]),
        "dailyCap": row["daily_cap"],
        "status": row["status"],
        "health": {
            "status": row["health"],
            "lastError": row["last_error"],
            "consecutiveFailures": row["consecutive_failures"],
            "bounceRate": round(bounced / sent, 4) if sent else 0.0,
            "sentToday": row["sent_today"],
        },
        "createdAt": iso(row["created_at"]),
        "updatedAt": iso(row["updated_at"]),
    }


def _stored(server: ServerIn, email: str) -> dict[str, Any]:
    return {"host": server.host, "port": server.port, "security": server.security,
            "username": server.username or email}


async def insert(pool: asyncpg.Pool, vault: Vault, workspace_id: str, body: MailboxCreate) -> asyncpg.Record:
    """Create from a validated body (shared by the API and `mailgw mailbox add`); 409 on a duplicate."""
    try:
        return await db.create(
            pool, workspace_id=workspace_id, email=body.email, from_name=body.fromName,
            smtp=_stored(body.smtp, body.email), smtp_password_enc=vault.encrypt(body.smtp.password),
            imap=_stored(body.imap, body.email) if body.imap else None,
            imap_password_enc=vault.encrypt(body.imap.password) if body.imap else None,
            daily_cap=body.dailyCap, status=body.status, today=now().date(),
        )
    except db.DuplicateEmail:
        raise Conflict("A mailbox with this email already exists in the workspace") from None


@endpoint(routes, "POST", "/v1/mailboxes", summary="Create a mailbox", tag="admin",
          body=MailboxCreate, response=Mailbox, status=201)
async def create_mailbox(request: web.Request) -> web.Response:
    ws = await workspace_of(request)
    body = await read_body(request, MailboxCreate)
    ctx = request.app[CTX]
    row = await insert(ctx.pool, ctx.vault, ws, body)
    log.info("mailbox_created", mailbox_id=row["id"], workspace_id=ws)
    return ok(view(row), 201)


@endpoint(routes, "GET", "/v1/mailboxes", summary="List mailboxes", tag="admin",
          query=Page, response=Mailbox, envelope="list")
async def list_mailboxes(request: web.Request) -> web.Response:
    ws = await workspace_of(request)
    page = read_query(request, Page)
    rows = await db.list_page(request.app[CTX].pool, ws, after=decode(page.cursor),
                              limit=page.limit + 1, today=now().date())
    items, cursor = page_of(list(rows), page.limit)
    return ok_list([view(r) for r in items], cursor)


@endpoint(routes, "GET", "/v1/mailboxes/{id}", summary="Get a mailbox", tag="admin", response=Mailbox)
async def get_mailbox(request: web.Request) -> web.Response:
    ws = await workspace_of(request)
    row = await db.get(request.app[CTX].pool, ws, request.match_info["id"], now().date())
    if row is None:
        raise NotFound()
    return ok(view(row))


def _merge(
    name: str, patch: ServerPatch, stored: dict[str, Any] | None, enc: str | None,
    email: str, vault: Vault,
) -> tuple[dict[str, Any], str]:
    """Apply a partial account change to the stored one; 400 naming `smtp.x`/`imap.x` if incomplete."""
    given = patch.model_dump(exclude_unset=True, exclude={"password"})
    merged = {**(stored or {}), **{k: v for k, v in given.items() if v is not None}}
    merged.setdefault("username", email)
    details: list[dict[str, str]] = []
    try:
        server = Server.model_validate(merged)
    except ValidationError as exc:
        details = [{"field": f"{name}.{d['field']}", "message": d["message"]}
                   for d in error_details(exc.errors())]
    if enc is None and patch.password is None:
        details.append({"field": f"{name}.password", "message": "Field required"})
    if details:
        raise BadRequest(details=details)
    new_enc = vault.encrypt(patch.password) if patch.password is not None else enc
    assert new_enc is not None
    return server.model_dump(), new_enc


@endpoint(routes, "PATCH", "/v1/mailboxes/{id}", summary="Update a mailbox", tag="admin",
          body=MailboxUpdate, response=Mailbox)
async def update_mailbox(request: web.Request) -> web.Response:
    ws = await workspace_of(request)
    mbx_id = request.match_info["id"]
    ctx = request.app[CTX]
    current = await db.secrets_of(ctx.pool, ws, mbx_id)
    if current is None:
        raise NotFound()
    body = await read_body(request, MailboxUpdate)
    given = body.model_fields_set
    nulls = [f for f in ("email", "smtp", "dailyCap", "status") if f in given and getattr(body, f) is None]
    if nulls:
        raise BadRequest(details=[{"field": f, "message": "May not be null"} for f in nulls])
    changes: dict[str, Any] = {}
    if body.email is not None:
        changes["email"] = body.email
    if "fromName" in given:
        changes["from_name"] = body.fromName
    if body.dailyCap is not None:
        changes["daily_cap"] = body.dailyCap
    if body.status is not None:
        changes["status"] = body.status
    email = body.email or str(current["email"])
    if body.smtp is not None:
        changes["smtp"], changes["smtp_password_enc"] = _merge(
            "smtp", body.smtp, current["smtp"], current["smtp_password_enc"], email, ctx.vault)
    if "imap" in given:
        if body.imap is None:
            changes["imap"], changes["imap_password_enc"] = None, None
        else:
            changes["imap"], changes["imap_password_enc"] = _merge(
                "imap", body.imap, current["imap"], current["imap_password_enc"], email, ctx.vault)
    try:
        row = await db.update(ctx.pool, ws, mbx_id, changes, now().date())
    except db.DuplicateEmail:
        raise Conflict("A mailbox with this email already exists in the workspace") from None
    if row is None:
        raise NotFound()
    log.info("mailbox_updated", mailbox_id=mbx_id, workspace_id=ws, fields=sorted(given))
    return ok(view(row))


@endpoint(routes, "DELETE", "/v1/mailboxes/{id}", summary="Delete a mailbox (leaves every pool)",
          tag="admin", status=204, envelope="none")
async def delete_mailbox(request: web.Request) -> web.Response:
    ws = await workspace_of(request)
    if not await db.soft_delete(request.app[CTX].pool, ws, request.match_info["id"]):
        raise NotFound()
    return no_content()
