"""Operator helpers of the CLI (`mailgw mailbox add`, `identity add`, `webhook add`, `send`).

They validate with the same models as the HTTP API and print JSON. Passwords and keys are
read from environment variables or standard input, never from flags, so they stay out of
shell history and process listings.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import secrets
import sys
from typing import Any

import orjson
from pydantic import BaseModel, ValidationError

from gateway.config import Settings
from gateway.errors import GatewayError
from gateway.validation import error_details

PASSWORD_ENV = "MAILGW_MAILBOX_PASSWORD"
API_KEY_ENV = "MAILGW_API_KEY"


def add_commands(sub: Any) -> None:
    """Register operator subcommands on the top-level parser's subparsers."""
    mailbox = sub.add_parser("mailbox", help="manage mailboxes").add_subparsers(dest="action", required=True)
    m = mailbox.add_parser("add", help="add a mailbox to a workspace")
    m.add_argument("--workspace", required=True, help="workspace id (ws_…)")
    m.add_argument("--email", required=True)
    m.add_argument("--from-name")
    m.add_argument("--smtp-host", required=True)
    m.add_argument("--smtp-port", type=int, required=True)
    m.add_argument("--smtp-security", choices=["tls", "starttls", "none"], default="starttls")
    m.add_argument("--smtp-username", help="default: the mailbox address")
    m.add_argument("--imap-host")
    m.add_argument("--imap-port", type=int)
    m.add_argument("--imap-security", choices=["tls", "starttls", "none"], default="tls")
    m.add_argument("--imap-username", help="default: the mailbox address")
    m.add_argument(
        "--password-env",
        default=PASSWORD_ENV,
        metavar="NAME",
        help=f"environment variable holding the password (default {PASSWORD_ENV})",
    )
    m.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    m.add_argument("--imap-password-env", metavar="NAME", help="IMAP password if it differs from SMTP's")
    m.add_argument("--daily-cap", type=int, default=100)
    m.add_argument("--paused", action="store_true", help="create it paused")

    identity = sub.add_parser("identity", help="manage identities").add_subparsers(
        dest="action", required=True
    )
    i = identity.add_parser("add", help="add an identity to a workspace")
    i.add_argument("--workspace", required=True, help="workspace id (ws_…)")
    i.add_argument("--handle", required=True)
    i.add_argument("--display-name")
    i.add_argument("--daily-cap", type=int, default=100)
    i.add_argument("--timezone", default="UTC")
    i.add_argument(
        "--mailbox",
        action="append",
        default=[],
        dest="mailboxes",
        metavar="MBX_ID",
        help="a mailbox of the pool (repeat)",
    )

    webhook = sub.add_parser("webhook", help="manage webhook endpoints").add_subparsers(
        dest="action", required=True
    )
    w = webhook.add_parser("add", help="add a webhook endpoint (prints its signing secret once)")
    w.add_argument("--workspace", required=True, help="workspace id (ws_…)")
    w.add_argument("--url", required=True)
    w.add_argument(
        "--event",
        action="append",
        default=[],
        dest="events",
        metavar="TYPE",
        help="an event type or * (repeat; default *)",
    )
    w.add_argument("--description")

    s = sub.add_parser("send", help="send a test message through the running API")
    s.add_argument("--workspace", help="workspace id (needed with a platform key)")
    s.add_argument(
        "--key-env",
        default=API_KEY_ENV,
        metavar="NAME",
        help=f"environment variable holding the API key (default {API_KEY_ENV})",
    )
    s.add_argument("--key", help="the API key (prefer --key-env: flags land in shell history)")
    s.add_argument("--url", help="API base URL (default MAILGW_PUBLIC_URL)")
    s.add_argument("--handle", required=True)
    s.add_argument("--to", required=True, action="append")
    s.add_argument("--subject", required=True)
    s.add_argument("--text")
    s.add_argument("--html")


def _print(obj: Any) -> None:
    print(orjson.dumps(obj, option=orjson.OPT_INDENT_2).decode())


def _fail(message: str, details: list[dict[str, str]] | None = None) -> int:
    out: dict[str, Any] = {"error": message}
    if details:
        out["details"] = details
    print(orjson.dumps(out).decode(), file=sys.stderr)
    return 1


def _validate(model: type[BaseModel], data: dict[str, Any]) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise GatewayError("invalid arguments", details=error_details(exc.errors())) from None


def _password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        value = sys.stdin.readline().rstrip("\r\n")
    else:
        value = os.environ.get(args.password_env, "")
    if not value:
        source = "stdin" if args.password_stdin else f"${args.password_env}"
        raise GatewayError(f"no mailbox password: set {source}")
    return value


async def _workspace_exists(pool: Any, workspace_id: str) -> None:
    if not await pool.fetchval("SELECT EXISTS (SELECT 1 FROM workspaces WHERE id = $1)", workspace_id):
        raise GatewayError(f"no workspace {workspace_id}")


async def _mailbox_add(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    from gateway.api import mailboxes as api
    from gateway.crypto import Vault
    from gateway.db.pool import create_pool

    password = _password(args)
    data: dict[str, Any] = {
        "email": args.email,
        "fromName": args.from_name,
        "dailyCap": args.daily_cap,
        "status": "paused" if args.paused else "active",
        "smtp": {
            "host": args.smtp_host,
            "port": args.smtp_port,
            "security": args.smtp_security,
            "username": args.smtp_username,
            "password": password,
        },
    }
    if args.imap_host:
        imap_password = os.environ.get(args.imap_password_env, "") if args.imap_password_env else password
        data["imap"] = {
            "host": args.imap_host,
            "port": args.imap_port or 993,
            "security": args.imap_security,
            "username": args.imap_username,
            "password": imap_password,
        }
    body = _validate(api.MailboxCreate, data)
    pool = await create_pool(settings.database_url, max_size=2)
    try:
        await _workspace_exists(pool, args.workspace)
        row = await api.insert(pool, Vault(settings.secret_keys()), args.workspace, body)
        return api.view(row)
    finally:
        await pool.close()


async def _identity_add(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    from gateway.api import identities as api
    from gateway.db.pool import create_pool

    body = _validate(
        api.IdentityCreate,
        {
            "handle": args.handle,
            "displayName": args.display_name,
            "dailyCap": args.daily_cap,
            "timezone": args.timezone,
            "mailboxIds": args.mailboxes,
        },
    )
    pool = await create_pool(settings.database_url, max_size=2)
    try:
        await _workspace_exists(pool, args.workspace)
        return api.view(await api.insert(pool, args.workspace, body))
    finally:
        await pool.close()


def _new_secret() -> str:
    try:
        from gateway.webhooks.signing import new_secret
    except ImportError:
        return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    return new_secret()


async def _webhook_add(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    from gateway.crypto import Vault
    from gateway.db import webhooks as db
    from gateway.db.pool import create_pool
    from gateway.timefmt import iso

    if not args.url.startswith(("http://", "https://")):
        raise GatewayError(
            "invalid arguments", details=[{"field": "url", "message": "Must be an http(s) URL"}]
        )
    secret = _new_secret()
    pool = await create_pool(settings.database_url, max_size=2)
    try:
        await _workspace_exists(pool, args.workspace)
        # Stored encrypted, like the API does; shown here once.
        row = await db.create_endpoint(
            pool,
            workspace_id=args.workspace,
            url=args.url,
            events=args.events or ["*"],
            description=args.description,
            enabled=True,
            secret_enc=Vault(settings.secret_keys()).encrypt(secret),
        )
    finally:
        await pool.close()
    return {
        "id": row["id"],
        "url": row["url"],
        "events": list(row["events"]),
        "description": row["description"],
        "enabled": row["enabled"],
        "secret": secret,
        "createdAt": iso(row["created_at"]),
    }


async def _send(args: argparse.Namespace, settings: Settings) -> tuple[int, Any]:
    import aiohttp

    key = args.key or os.environ.get(args.key_env, "")
    if not key:
        raise GatewayError(f"no API key: set ${args.key_env}")
    headers = {"X-Api-Key": key}
    if args.workspace:
        headers["X-Workspace-Id"] = args.workspace
    body: dict[str, Any] = {"to": args.to[0] if len(args.to) == 1 else args.to, "subject": args.subject}
    if args.text:
        body["text"] = args.text
    if args.html:
        body["html"] = args.html
    base = (args.url or settings.public_url).rstrip("/")
    url = f"{base}/v1/identities/{args.handle}/send"
    timeout = aiohttp.ClientTimeout(total=settings.rpc_timeout + 10)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.post(url, json=body, headers=headers) as resp,
    ):
        text = await resp.text()
        try:
            return resp.status, orjson.loads(text)
        except orjson.JSONDecodeError:
            return resp.status, {"status": resp.status, "body": text[:2000]}


def dispatch(args: argparse.Namespace, settings: Settings) -> int:
    command = args.command
    try:
        if command == "mailbox" and args.action == "add":
            _print(asyncio.run(_mailbox_add(args, settings)))
            return 0
        if command == "identity" and args.action == "add":
            _print(asyncio.run(_identity_add(args, settings)))
            return 0
        if command == "webhook" and args.action == "add":
            _print(asyncio.run(_webhook_add(args, settings)))
            return 0
        if command == "send":
            status, body = asyncio.run(_send(args, settings))
            _print(body)
            return 0 if 200 <= status < 300 else 1
    except GatewayError as exc:
        return _fail(exc.message, exc.details)
    except OSError as exc:
        return _fail(f"{type(exc).__name__}: {exc}")
    raise SystemExit(f"mailgw: unknown command {command}")
