"""Recognise delivery status notifications (RFC 3464 DSNs and common vendor bounces)."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import EmailMessage, Message
from typing import Literal

from flufl.bounce import all_failures

from gateway.mail.decode import decode_header_value
from gateway.mail.threading import parse_msgid_list

BounceType = Literal["hard", "soft"]

_STATUS = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_SMTP_CODE = re.compile(r"(?:^|[\s;])([245])\d\d(?=[\s-]|$)")
_MSGID_LINE = re.compile(r"^(?:X-Original-)?Message-ID:[ \t]*(.*(?:\r?\n[ \t].*)*)", re.I | re.M)
# Heuristic (non-DSN) bounces are only trusted from senders and subjects that say "bounce",
# so a human reply quoting "user unknown" is never taken for one.
_BOUNCE_SENDER = re.compile(r"mailer-daemon|postmaster|mail delivery (sub)?system", re.I)
_BOUNCE_SUBJECT = re.compile(
    r"undeliver|delivery (status notification|failure|has failed|failed)|returned mail"
    r"|failure notice|mail delivery failed|could not be delivered|nondeliverable|unzustellbar"
    r"|non remis|delivery incomplete",
    re.I,
)
_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BounceRecipient:
    """One failed or delayed recipient of the original message."""

    email: str
    status: str | None
    action: str | None
    diagnostic: str | None
    bounce_type: BounceType


@dataclass(frozen=True)
class Bounce:
    """A delivery failure report about a message we sent."""

    recipients: list[BounceRecipient]
    original_message_id: str | None

    @property
    def bounce_type(self) -> BounceType:
        """Hard if any recipient bounced hard; soft otherwise (unknown is not suppressed)."""
        return "hard" if any(r.bounce_type == "hard" for r in self.recipients) else "soft"


def _header_map(block: Message) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in block.raw_items():
        out.setdefault(str(name).lower(), " ".join(str(value).split()))
    return out


def _text_blocks(text: str) -> list[dict[str, str]]:
    # A delivery-status body the parser left as text: blank-line separated field groups.
    blocks: list[dict[str, str]] = []
    for chunk in re.split(r"\r?\n[ \t]*\r?\n", text):
        fields: dict[str, str] = {}
        last = None
        for line in chunk.splitlines():
            if line[:1] in {" ", "\t"} and last:
                fields[last] += " " + line.strip()
            elif ":" in line:
                name, _, value = line.partition(":")
                last = name.strip().lower()
                fields.setdefault(last, value.strip())
        if fields:
            blocks.append(fields)
    return blocks


def _status_blocks(part: Message) -> list[dict[str, str]]:
    payload = part.get_payload()
    if isinstance(payload, list):
        return [_header_map(b) for b in payload if isinstance(b, Message)]
    if isinstance(payload, str):
        data = part.get_payload(decode=True)
        text = data.decode("utf-8", "replace") if isinstance(data, bytes) else payload
        return _text_blocks(text)
    return []


def _address(value: str | None) -> str | None:
    if not value:
        return None
    addr = value.split(";", 1)[1] if ";" in value else value  # "rfc822; user@host"
    addr = addr.strip().strip("<>").strip()
    return addr.lower() if "@" in addr else None


def classify_status(status: str | None, action: str | None, diagnostic: str | None) -> BounceType:
    """Hard for 5.x.x (or a failed action with a 5xx reply), soft for 4.x.x and delays."""
    if status and status[:1] in {"4", "5"}:
        return "hard" if status[0] == "5" else "soft"
    code = _SMTP_CODE.search(diagnostic or "")
    if code:
        return "hard" if code.group(1) == "5" else "soft"
    return "hard" if (action or "").startswith(("fail", "error")) else "soft"


def _dsn_recipients(msg: Message) -> tuple[list[BounceRecipient], bool]:
    """Failed/delayed recipients, and whether any recipient block reported a success."""
    out: list[BounceRecipient] = []
    succeeded = False
    for part in msg.walk():
        if part.get_content_type() not in {"message/delivery-status", "message/global-delivery-status"}:
            continue
        for block in _status_blocks(part):
            email = _address(block.get("original-recipient")) or _address(block.get("final-recipient"))
            action = (block.get("action") or "").split()[0].lower() if block.get("action") else None
            if not email:
                continue  # the per-message block
            if action in {"delivered", "relayed", "expanded"}:
                succeeded = True  # a success notice is not a failure
                continue
            found = _STATUS.search(block.get("status", ""))
            status = ".".join(found.groups()) if found else None
            diagnostic = block.get("diagnostic-code")
            if diagnostic and ";" in diagnostic:
                diagnostic = diagnostic.split(";", 1)[1].strip()  # drop the "smtp;" type
            kind = classify_status(status, action, diagnostic)
            out.append(BounceRecipient(email, status, action, diagnostic or None, kind))
    return out, succeeded


def _flufl_recipients(msg: Message) -> list[BounceRecipient]:
    # flufl.bounce detectors expect compat32 messages and may raise on odd input.
    try:
        compat = message_from_bytes(msg.as_bytes(policy=policy.compat32), policy=policy.compat32)
        temporary, permanent = all_failures(compat)
    except Exception:
        _log.debug("flufl.bounce failed on a message", exc_info=True)
        return []
    out: list[BounceRecipient] = []
    for raw, kind in [(a, "hard") for a in sorted(permanent)] + [
        (a, "soft") for a in sorted(temporary - permanent)
    ]:
        email = raw.decode("ascii", "replace").strip().lower()
        action = "failed" if kind == "hard" else "delayed"
        out.append(BounceRecipient(email, None, action, None, "hard" if kind == "hard" else "soft"))
    return out


def _original_message_id(msg: Message) -> str | None:
    own = parse_msgid_list(_header_map(msg).get("message-id"))
    candidates: list[str] = []
    for part in msg.walk():
        ctype = part.get_content_type()
        payload = part.get_payload()
        if ctype in {"message/rfc822", "message/global"} and isinstance(payload, list) and payload:
            inner = payload[0]
            if isinstance(inner, Message):
                candidates.append(_header_map(inner).get("message-id", ""))
        elif ctype in {"text/rfc822-headers", "text/plain"} and isinstance(payload, str):
            data = part.get_payload(decode=True)
            text = data.decode("utf-8", "replace") if isinstance(data, bytes) else payload
            candidates.extend(m.group(1) for m in _MSGID_LINE.finditer(text))
    for value in candidates:
        ids = [i for i in parse_msgid_list(value) if i not in own]
        if ids:
            return ids[0]
    return None


def _looks_like_bounce(msg: Message) -> bool:
    headers = {str(k).lower(): str(v) for k, v in msg.raw_items()}
    sender = decode_header_value(headers.get("from", ""))
    subject = decode_header_value(headers.get("subject", ""))
    return (
        headers.get("return-path", "").strip() == "<>"
        or bool(_BOUNCE_SENDER.search(sender))
        or bool(_BOUNCE_SUBJECT.search(subject))
    )


def parse_bounce(msg: EmailMessage | Message | bytes) -> Bounce | None:
    """A Bounce for a delivery failure report, None for anything else; never raises."""
    try:
        if isinstance(msg, bytes | bytearray):
            msg = message_from_bytes(bytes(msg), policy=policy.default)
        return _parse(msg)
    except Exception:
        _log.debug("unreadable bounce candidate", exc_info=True)
        return None


def _parse(msg: Message) -> Bounce | None:
    is_report = msg.get_content_type() == "multipart/report"
    has_dsn = any(
        p.get_content_type() in {"message/delivery-status", "message/global-delivery-status"}
        for p in msg.walk()
    )
    if not has_dsn and not _looks_like_bounce(msg):
        return None
    recipients, succeeded = _dsn_recipients(msg) if has_dsn else ([], False)
    if not recipients and succeeded:
        return None  # a positive delivery notification
    if not recipients:
        recipients = _flufl_recipients(msg)
    original = _original_message_id(msg)
    if recipients or ((is_report or has_dsn) and original):
        return Bounce(recipients, original)
    return None
