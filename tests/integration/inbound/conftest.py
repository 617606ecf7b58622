"""Fixtures for the poller: a lab mailbox in a private IMAP folder, a sent conversation, APPEND."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Any

import asyncpg
import pytest

from gateway.config import Settings
from gateway.crypto import Vault
from gateway.ids import new_id
from gateway.timefmt import now
from tests.support import factories
from tests.support.mailserver import ensure_lab, imap_login

pytestmark = pytest.mark.integration


@dataclass
class Lab:
    """A workspace whose mailbox is a lab user, an identity, and one sent conversation."""

    workspace_id: str
    mailbox_id: str
    mailbox_email: str
    identity_id: str
    conversation_id: str
    sent_message_id: str  # msg_…
    sent_rfc_id: str  # <…>
    lead: str
    folder: str


def make_mail(
    *,
    sender: str,
    to: str,
    subject: str = "Re: Hello",
    body: str = "Sounds good.\n\nOn Mon, Alice wrote:\n> Hello",
    in_reply_to: str | None = None,
    message_id: str | None = None,
    headers: dict[str, str] | None = None,
    attachment: tuple[str, bytes] | None = None,
) -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = format_datetime(now())
    msg["Message-ID"] = message_id or f"<{secrets.token_hex(8)}@lead.example>"
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
        msg["References"] = in_reply_to
    for k, v in (headers or {}).items():
        msg[k] = v
    msg.set_content(body)
    if attachment:
        msg.add_attachment(attachment[1], maintype="application", subtype="pdf", filename=attachment[0])
    return bytes(msg)


def make_dsn(*, reporter: str, to: str, failed: str, original_id: str, status: str = "5.1.1") -> bytes:
    boundary = "dsnb" + secrets.token_hex(4)
    action = "failed" if status.startswith("5") else "delayed"
    return (
        f"From: MAILER-DAEMON@{reporter}\r\nTo: {to}\r\nSubject: Undelivered Mail Returned to Sender\r\n"
        f"Message-ID: <{secrets.token_hex(8)}@{reporter}>\r\nAuto-Submitted: auto-replied\r\n"
        f"MIME-Version: 1.0\r\n"
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"\r\n\r\n'
        f"--{boundary}\r\nContent-Type: text/plain\r\n\r\nDelivery to {failed} failed.\r\n"
        f"--{boundary}\r\nContent-Type: message/delivery-status\r\n\r\n"
        f"Reporting-MTA: dns; {reporter}\r\n\r\n"
        f"Final-Recipient: rfc822; {failed}\r\nAction: {action}\r\nStatus: {status}\r\n"
        f"Diagnostic-Code: smtp; 550 {status} <{failed}>: Recipient address rejected\r\n\r\n"
        f"--{boundary}\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        f"From: {to}\r\nTo: {failed}\r\nSubject: Hello\r\nMessage-ID: {original_id}\r\n\r\n"
        f"--{boundary}--\r\n"
    ).encode()


async def make_lab(
    pool: asyncpg.Pool, vault: Vault, *, user: str = "gateway@example.test", lead: str = "bob@example.test",
    imap_port: int = 1143, password: str = "secret",
) -> Lab:
    t = await factories.tenant(pool)
    mbx = await factories.mailbox(pool, vault, t.workspace_id, user, imap_port=imap_port, password=password)
    idn = await factories.identity(pool, t.workspace_id, "alice.acme@example.com", [mbx])
    conv, msg = new_id("conv"), new_id("msg")
    rfc = f"<{secrets.token_hex(10)}@example.test>"
    await pool.execute(
        "INSERT INTO conversations (id, workspace_id, identity_id, mailbox_id, lead_id, lead_email, subject,"
        " metadata) VALUES ($1, $2, $3, $4, $5, $6, 'Hello', $7)",
        conv, t.workspace_id, idn, mbx, new_id("lead"), lead, {"campaign": "c1"},
    )
    await pool.execute(
        "INSERT INTO messages (id, conversation_id, workspace_id, mailbox_id, type, direction,"
        " rfc_message_id, from_email, to_emails, subject, text_body, status, sent_at, metadata, read)"
        " VALUES ($1, $2, $3, $4, 'sent', 'outbound', $5, $6, $7, 'Hello', 'Hello Bob', 'sent', now(),"
        " $8, true)",
        msg, conv, t.workspace_id, mbx, rfc, user, [lead], {"campaign": "c1", "step": 1},
    )
    return Lab(t.workspace_id, mbx, user, idn, conv, msg, rfc, lead, "INBOX")


@pytest.fixture(scope="session")
def mail_lab() -> None:
    ensure_lab()


@pytest.fixture
def vault(settings: Settings) -> Vault:
    return Vault(settings.secret_keys())


@pytest.fixture
async def folder(mail_lab: None) -> AsyncIterator[str]:
    """A private folder in gateway@'s mailbox, so concurrent tests never see each other's mail."""
    name = f"T{secrets.token_hex(5)}"
    client = await imap_login("gateway@example.test")
    try:
        await client.create(name)
    finally:
        await client.logout()
    yield name
    client = await imap_login("gateway@example.test")
    try:
        await client.delete(name)
    finally:
        await client.logout()


@pytest.fixture
async def lab(pool: asyncpg.Pool, vault: Vault, folder: str) -> Lab:
    made = await make_lab(pool, vault)
    made.folder = folder
    return made


Appender = Callable[..., Awaitable[None]]


@pytest.fixture
async def append(mail_lab: None) -> AsyncIterator[Appender]:
    """APPEND raw messages into a folder of a lab user (one connection per test)."""
    clients: dict[str, Any] = {}

    async def _append(folder: str, *raws: bytes, user: str = "gateway@example.test") -> None:
        if user not in clients:
            clients[user] = await imap_login(user)
        for raw in raws:
            response = await clients[user].append(raw, mailbox=folder)
            assert response.result == "OK", response.lines

    yield _append
    for client in clients.values():
        await client.logout()


async def wait_for(
    check: Callable[[], Awaitable[bool]], timeout: float = 20.0, interval: float = 0.1  # noqa: ASYNC109
) -> None:
    """Poll a condition until it holds (bounded)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        if loop.time() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(interval)

