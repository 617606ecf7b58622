"""Helpers for integration tests against the loopback mail lab (scripts/mail-lab/).

The lab: Dovecot IMAP 127.0.0.1:1143 (IMAPS 1993, LMTP 2424) and Postfix SMTP 127.0.0.1:2525
(submission with AUTH required: 2587); users alice@, bob@, carol@, gateway@, sink@example.test,
password "secret". Mail to other domains lands in sink@example.test.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import re
import socket
import subprocess
from collections.abc import Sequence
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import aioimaplib
import aiosmtplib

__all__ = [
    "HOST",
    "IMAPS_PORT",
    "IMAP_PORT",
    "LAB_DIR",
    "PASSWORD",
    "SMTP_PORT",
    "SUBMISSION_PORT",
    "ensure_lab",
    "imap_clear",
    "imap_fetch_by_message_id",
    "imap_login",
    "lab_up",
    "smtp_send",
]

HOST = "127.0.0.1"
IMAP_PORT = 1143
IMAPS_PORT = 1993
SMTP_PORT = 2525
SUBMISSION_PORT = 2587
PASSWORD = "secret"
LAB_DIR = Path(__file__).resolve().parents[2] / "scripts" / "mail-lab"

_LITERAL = re.compile(rb"\{(\d+)\}$")
_POLL_INTERVAL = 0.2


def _port_open(port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=timeout):
            return True
    except OSError:
        return False


def lab_up() -> bool:
    """True when the lab's IMAP (1143) and SMTP (2525) ports accept connections."""
    return _port_open(IMAP_PORT) and _port_open(SMTP_PORT)


def ensure_lab() -> None:
    """Install (if needed) and start the mail lab unless it is up already. Needs root."""
    if lab_up():
        return
    for script in ("install.sh", "start.sh"):
        proc = subprocess.run(
            [str(LAB_DIR / script)],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if proc.returncode != 0:
            tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-30:])
            raise RuntimeError(f"mail lab: {script} exited {proc.returncode}:\n{tail}")
    if not lab_up():
        raise RuntimeError("mail lab: start.sh succeeded but ports 1143/2525 are not open")


async def imap_login(
    user: str, *, password: str = PASSWORD, command_timeout: float = 20.0
) -> aioimaplib.IMAP4:
    """A logged-in aioimaplib client on the plain IMAP port (caller logs out)."""
    client = aioimaplib.IMAP4(HOST, IMAP_PORT, timeout=command_timeout)
    await client.wait_hello_from_server()
    response = await client.login(user, password)
    if response.result != "OK":
        await client.logout()
        raise PermissionError(f"IMAP login {user}: {response.result} {response.lines}")
    return client


def _check(response: Any, what: str) -> Any:
    if response.result != "OK":
        raise RuntimeError(f"IMAP {what}: {response.result} {response.lines}")
    return response


async def _uid_search(client: aioimaplib.IMAP4, *criteria: str) -> list[int]:
    response = _check(await client.uid_search(*criteria), "UID SEARCH")
    uids: list[int] = []
    for line in response.lines[:-1]:  # last line is the tagged completion text
        words = bytes(line).split()
        if words and words[0].upper() == b"SEARCH":  # aioimaplib usually strips it already
            words = words[1:]
        uids.extend(int(w) for w in words if w.isdigit())
    return uids


async def _fetch_raw(client: aioimaplib.IMAP4, uid: int) -> bytes:
    response = _check(await client.uid("fetch", str(uid), "(BODY.PEEK[])"), "UID FETCH")
    lines = response.lines
    for i, line in enumerate(lines[:-1]):
        if _LITERAL.search(bytes(line)):  # the literal follows the line that ends in {n}
            return bytes(lines[i + 1])
    raise RuntimeError(f"IMAP UID FETCH {uid}: no message literal in {lines!r}")


def _imap_quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


async def imap_fetch_by_message_id(
    user: str,
    message_id: str,
    *,
    password: str = PASSWORD,
    timeout: float = 20.0,  # noqa: ASYNC109 -- a polling deadline, by design
) -> EmailMessage:
    """Poll `user`'s INBOX until a message with this Message-ID is there; return it parsed.

    Checks every 0.2 s until `timeout` (delivery through Postfix is asynchronous). The
    message is fetched with BODY.PEEK[], so its \\Seen flag is left alone.
    """
    wanted = message_id.strip().strip("<>")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    client = await imap_login(user, password=password, command_timeout=max(timeout, 5.0))
    try:
        _check(await client.select("INBOX"), "SELECT INBOX")
        while True:
            _check(await client.noop(), "NOOP")  # let Dovecot sync the mailbox view
            # HEADER search is a substring match: confirm the exact Message-ID after fetching.
            for uid in await _uid_search(client, "HEADER", "Message-ID", _imap_quote(wanted)):
                raw = await _fetch_raw(client, uid)
                msg = email.message_from_bytes(raw, policy=email.policy.default)
                if str(msg.get("Message-ID", "")).strip().strip("<>") == wanted:
                    return msg
            if loop.time() >= deadline:
                raise TimeoutError(
                    f"no message with Message-ID <{wanted}> in {user}'s INBOX after {timeout}s"
                )
            await asyncio.sleep(_POLL_INTERVAL)
    finally:
        await client.logout()


async def imap_clear(user: str, *, password: str = PASSWORD) -> None:
    """Delete every message in `user`'s INBOX (\\Deleted + EXPUNGE)."""
    client = await imap_login(user, password=password)
    try:
        response = _check(await client.select("INBOX"), "SELECT INBOX")
        exists = next(
            (int(bytes(x).split()[0]) for x in response.lines if bytes(x).endswith(b"EXISTS")), 0
        )
        if exists:
            _check(await client.uid("store", "1:*", "+FLAGS.SILENT", r"(\Deleted)"), "UID STORE")
            _check(await client.expunge(), "EXPUNGE")
    finally:
        await client.logout()


async def smtp_send(
    from_addr: str,
    to_addrs: str | Sequence[str],
    msg: EmailMessage | bytes,
    *,
    port: int = SMTP_PORT,
    username: str | None = None,
    password: str | None = None,
) -> None:
    """Send `msg` with this envelope through the lab's Postfix (plain SMTP, no STARTTLS).

    For the AUTH-required submission port pass port=SUBMISSION_PORT and username (the
    password defaults to the lab's). Refusals raise aiosmtplib's exceptions.
    """
    recipients = [to_addrs] if isinstance(to_addrs, str) else list(to_addrs)
    if username is not None and password is None:
        password = PASSWORD
    await aiosmtplib.send(
        msg,
        sender=from_addr,
        recipients=recipients,
        hostname=HOST,
        port=port,
        username=username,
        password=password,
        start_tls=False,  # aiosmtplib would otherwise upgrade whenever STARTTLS is offered
        timeout=30,
    )
