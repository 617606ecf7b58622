"""One IMAP connection with aioimaplib: login, SELECT, UIDs above a cursor, fetch, IDLE."""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
from dataclasses import dataclass
from typing import Any

import aioimaplib

from gateway.inbound.classify import Fetched

_UIDVALIDITY = re.compile(rb"\[UIDVALIDITY (\d+)\]", re.I)
_UIDNEXT = re.compile(rb"\[UIDNEXT (\d+)\]", re.I)
_EXISTS = re.compile(rb"^(\d+) EXISTS", re.I)
_FETCH_HEAD = re.compile(rb"^\d+ FETCH \(.*\{(\d+)\}$", re.I | re.S)
_UID = re.compile(rb"\bUID (\d+)", re.I)


class ImapError(Exception):
    """The server refused or broke a command, or the connection is gone."""


class LoginFailed(ImapError):
    """Connection or authentication failed: counts against the mailbox's health."""


@dataclass(frozen=True)
class FolderState:
    uidvalidity: int
    uidnext: int | None
    exists: int


def _ok(response: Any, what: str) -> Any:
    if response.result != "OK":
        raise ImapError(f"{what}: {response.result} {_text(response.lines)[:200]}")
    return response


def _text(lines: list[Any]) -> str:
    return " ".join(bytes(x).decode("utf-8", "replace") for x in lines if isinstance(x, bytes | bytearray))


def uid_set(uids: list[int]) -> str:
    """Compress sorted UIDs into an IMAP set: 1:3,7,9:10."""
    out: list[str] = []
    start = prev = uids[0]
    for uid in uids[1:]:
        if uid == prev + 1:
            prev = uid
            continue
        out.append(f"{start}:{prev}" if prev != start else str(start))
        start = prev = uid
    out.append(f"{start}:{prev}" if prev != start else str(start))
    return ",".join(out)


def parse_fetch(lines: list[Any]) -> list[Fetched]:
    """(uid, literal) pairs of a `UID FETCH … (UID BODY.PEEK[])` response."""
    out: list[Fetched] = []
    for i, line in enumerate(lines):
        if not isinstance(line, bytes) or i + 1 >= len(lines):
            continue
        head = _FETCH_HEAD.match(line)
        if head is None:
            continue
        literal = lines[i + 1]
        found = _UID.search(line)
        if found is None and i + 2 < len(lines) and isinstance(lines[i + 2], bytes):
            found = _UID.search(lines[i + 2])  # UID may follow the literal
        if found is not None and isinstance(literal, bytes | bytearray):
            out.append(Fetched(int(found.group(1)), bytes(literal)))
    return out


class ImapSession:
    """A logged-in client; `lost` is set when the server closes the connection."""

    def __init__(self, client: Any, lost: asyncio.Event) -> None:
        self.client = client
        self.lost = lost

    @classmethod
    async def open(
        cls, host: str, port: int, security: str, username: str, password: str, command_timeout: float = 30.0
    ) -> ImapSession:
        lost = asyncio.Event()
        try:
            if security == "tls":
                client = aioimaplib.IMAP4_SSL(host, port, timeout=command_timeout,
                                              ssl_context=ssl.create_default_context())
                client.protocol.conn_lost_cb = lambda exc: lost.set()
            elif security == "none":
                client = aioimaplib.IMAP4(host, port, timeout=command_timeout,
                                          conn_lost_cb=lambda exc: lost.set())
            else:
                raise LoginFailed(f"IMAP security {security!r} is not supported (use tls or none)")
            await client.wait_hello_from_server()
            response = await client.login(username, password)
        except LoginFailed:
            raise
        except (OSError, TimeoutError, aioimaplib.AioImapException) as exc:
            raise LoginFailed(f"IMAP connect {host}:{port}: {type(exc).__name__}: {exc}") from exc
        if response.result != "OK":
            session = cls(client, lost)
            await session.close()
            raise LoginFailed(f"IMAP login refused: {_text(response.lines)[:200]}")
        return cls(client, lost)

    @property
    def supports_idle(self) -> bool:
        return bool(self.client.has_capability("IDLE"))

    async def select(self, folder: str) -> FolderState:
        response = _ok(await self.client.select(folder), f"SELECT {folder}")
        validity = nxt = None
        exists = 0
        for line in response.lines:
            if not isinstance(line, bytes | bytearray):
                continue
            raw = bytes(line)
            if m := _UIDVALIDITY.search(raw):
                validity = int(m.group(1))
            if m := _UIDNEXT.search(raw):
                nxt = int(m.group(1))
            if m := _EXISTS.match(raw):
                exists = int(m.group(1))
        if validity is None:
            raise ImapError(f"SELECT {folder}: no UIDVALIDITY in the response")
        return FolderState(validity, nxt, exists)

    async def uids_above(self, last_uid: int) -> list[int]:
        """UIDs greater than `last_uid`, ascending. `UID SEARCH UID n:*` always matches the
        newest message even when its UID is below n, so the result is filtered."""
        response = _ok(await self.client.uid_search(f"UID {last_uid + 1}:*", charset=None), "UID SEARCH")
        uids: set[int] = set()
        for line in response.lines[:-1]:
            words = bytes(line).split()
            if words and words[0].upper() == b"SEARCH":
                words = words[1:]
            uids.update(int(w) for w in words if w.isdigit())
        return sorted(u for u in uids if u > last_uid)

    async def fetch(self, uids: list[int]) -> list[Fetched]:
        if not uids:
            return []
        response = _ok(await self.client.uid("fetch", uid_set(uids), "(UID BODY.PEEK[])"), "UID FETCH")
        wanted = set(uids)
        return sorted((f for f in parse_fetch(response.lines) if f.uid in wanted), key=lambda f: f.uid)

    async def idle(self, seconds: float) -> None:
        """IDLE until the server pushes something, `seconds` pass, or the connection drops."""
        if self.lost.is_set():
            raise ImapError("connection lost")
        try:
            idle = await self.client.idle_start(timeout=seconds)
        except (aioimaplib.AioImapException, TimeoutError) as exc:
            raise ImapError(f"IDLE: {exc}") from exc
        push = asyncio.ensure_future(self.client.wait_server_push(timeout=seconds + 5.0))
        lost = asyncio.ensure_future(self.lost.wait())
        try:
            await asyncio.wait({push, lost}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            push.cancel()
            lost.cancel()
        if self.lost.is_set():
            idle.cancel()
            raise ImapError("connection lost during IDLE")
        self.client.idle_done()
        try:
            await asyncio.wait_for(idle, timeout=30.0)
        except (TimeoutError, aioimaplib.AioImapException) as exc:
            raise ImapError(f"IDLE did not end: {exc!r}") from exc

    async def noop(self) -> None:
        _ok(await self.client.noop(), "NOOP")

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            if not self.lost.is_set() and not self.client.has_pending_idle():
                await asyncio.wait_for(self.client.logout(), timeout=5.0)
        with contextlib.suppress(Exception):
            transport = self.client.protocol.transport
            if transport is not None:
                transport.close()
