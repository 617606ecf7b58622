"""SMTP connections reused per mailbox: a bounded pool, checked before reuse, rebuilt when dead.

`SmtpPools.get(mailbox_id, account)` returns the mailbox's pool (a new one when its account
changed); `MailboxPool.send` runs one mail transaction and raises `SmtpFailure`, which says in
which phase it failed: `connect` (connect, TLS, AUTH: the account's fault, counts toward
mailbox health) or `mail` / `rcpt` / `data` (about this message).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Literal

import aiosmtplib
from aiosmtplib import SMTPResponse

Phase = Literal["connect", "mail", "rcpt", "data"]
Security = Literal["tls", "starttls", "none"]

# A connection idle longer than this gets a NOOP before reuse; older than MAX_IDLE it is closed.
CHECK_AFTER = 5.0
MAX_IDLE = 120.0


@dataclass(frozen=True)
class Account:
    """Where and how a mailbox submits mail."""

    host: str
    port: int
    security: Security
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    helo: str | None = None  # name given in EHLO (the mailbox's domain)


class SmtpFailure(Exception):
    """One failed transaction: the aiosmtplib/OS exception and the phase it happened in."""

    def __init__(self, cause: BaseException, phase: Phase) -> None:
        super().__init__(f"{phase}: {cause!r}")
        self.cause = cause
        self.phase = phase


@dataclass(frozen=True)
class Accepted:
    """The server took DATA: refusals of some recipients, and its reply to DATA."""

    refused: dict[str, SMTPResponse]
    response: str


def _dead(exc: BaseException) -> bool:
    return isinstance(exc, (aiosmtplib.SMTPServerDisconnected, ConnectionError, OSError))


class MailboxPool:
    """At most `size` concurrent connections to one account; idle ones are kept for reuse."""

    def __init__(self, account: Account, size: int, timeout: float) -> None:
        self.account = account
        self.timeout = timeout
        self._slots = asyncio.Semaphore(size)
        self._idle: list[tuple[aiosmtplib.SMTP, float]] = []
        self._closed = False
        self.connects = 0  # connections opened (observability and tests)

    async def send(self, sender: str, recipients: list[str], data: bytes) -> Accepted:
        async with self._slots:
            retried = False
            while True:
                client, reused = await self._checkout()
                try:
                    accepted = await self._transaction(client, sender, recipients, data)
                except SmtpFailure as failure:
                    if reused and not retried and failure.phase == "mail" and _dead(failure.cause):
                        # The server dropped an idle connection: nothing was sent, go again fresh.
                        self._discard(client)
                        retried = True
                        continue
                    await self._after_failure(client, failure)
                    raise
                except BaseException:
                    self._discard(client)  # cancelled mid-transaction: state unknown
                    raise
                self._checkin(client)
                return accepted

    async def _checkout(self) -> tuple[aiosmtplib.SMTP, bool]:
        now = time.monotonic()
        while self._idle:
            client, last_used = self._idle.pop()
            if not client.is_connected or now - last_used > MAX_IDLE:
                self._discard(client)
                continue
            if now - last_used > CHECK_AFTER:
                try:
                    await client.noop()
                except Exception:
                    self._discard(client)
                    continue
            return client, True
        return await self._connect(), False

    async def _connect(self) -> aiosmtplib.SMTP:
        a = self.account
        client = aiosmtplib.SMTP(
            hostname=a.host,
            port=a.port,
            timeout=self.timeout,
            use_tls=a.security == "tls",
            start_tls=a.security == "starttls",
            local_hostname=a.helo,
        )
        try:
            await client.connect()
            if a.username and a.password is not None:
                await client.login(a.username, a.password)
        except BaseException as exc:
            self._discard(client)
            if isinstance(exc, Exception):
                raise SmtpFailure(exc, "connect") from exc
            raise
        self.connects += 1
        return client

    async def _transaction(
        self, client: aiosmtplib.SMTP, sender: str, recipients: list[str], data: bytes
    ) -> Accepted:
        options: list[str] = []
        if client.supports_extension("size"):
            options.append(f"SIZE={len(data)}")
        if not data.isascii() and client.supports_extension("8bitmime"):
            options.append("BODY=8BITMIME")
        phase: Phase = "mail"
        try:
            await client.mail(sender, options=options)
            phase = "rcpt"
            refused: dict[str, SMTPResponse] = {}
            errors: list[aiosmtplib.SMTPRecipientRefused] = []
            for rcpt in recipients:
                try:
                    await client.rcpt(rcpt)
                except aiosmtplib.SMTPRecipientRefused as exc:
                    refused[rcpt] = SMTPResponse(exc.code, exc.message)
                    errors.append(exc)
            if len(errors) == len(recipients):
                raise aiosmtplib.SMTPRecipientsRefused(errors)
            phase = "data"
            response = await client.data(data)
        except Exception as exc:
            raise SmtpFailure(exc, phase) from exc
        return Accepted(refused, f"{response.code} {response.message}".strip())

    async def _after_failure(self, client: aiosmtplib.SMTP, failure: SmtpFailure) -> None:
        """Keep a connection that only refused this message (after RSET); drop a broken one."""
        if _dead(failure.cause) or not client.is_connected or not isinstance(
            failure.cause, (aiosmtplib.SMTPResponseException, aiosmtplib.SMTPRecipientsRefused)
        ):
            self._discard(client)
            return
        try:
            await client.rset()
        except Exception:
            self._discard(client)
            return
        self._checkin(client)

    def _checkin(self, client: aiosmtplib.SMTP) -> None:
        if self._closed or not client.is_connected:
            self._discard(client)
        else:
            self._idle.append((client, time.monotonic()))

    @staticmethod
    def _discard(client: aiosmtplib.SMTP) -> None:
        if client.is_connected:
            client.close()

    async def close(self) -> None:
        """Close idle connections (QUIT); connections in use are closed when returned."""
        self._closed = True
        idle, self._idle = self._idle, []
        for client, _ in idle:
            try:
                await asyncio.wait_for(client.quit(), timeout=2)
            except Exception:
                self._discard(client)


class SmtpPools:
    """One MailboxPool per mailbox; a changed account (e.g. a new password) replaces it."""

    def __init__(self, size: int, timeout: float) -> None:
        self.size = size
        self.timeout = timeout
        self._pools: dict[str, MailboxPool] = {}
        self._retired: set[asyncio.Task[None]] = set()

    def get(self, mailbox_id: str, account: Account) -> MailboxPool:
        pool = self._pools.get(mailbox_id)
        if pool is not None and pool.account == account:
            return pool
        if pool is not None:
            task = asyncio.create_task(pool.close())
            self._retired.add(task)
            task.add_done_callback(self._retired.discard)
        pool = self._pools[mailbox_id] = MailboxPool(account, self.size, self.timeout)
        return pool

    async def close(self) -> None:
        pools, self._pools = list(self._pools.values()), {}
        await asyncio.gather(*(p.close() for p in pools), *self._retired, return_exceptions=True)
