"""The pure first step of ingestion: raw bytes → what the message is (reply, bounce, junk)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from gateway.mail.autoreply import is_auto_reply
from gateway.mail.bounce import Bounce, parse_bounce
from gateway.mail.parse import ParsedMail, UnparseableMail, parse_inbound, parse_message
from gateway.mail.quotes import strip_quoted
from gateway.timefmt import now

Kind = Literal["mail", "bounce", "unparseable"]


@dataclass(frozen=True)
class Fetched:
    """One message as the IMAP server gave it."""

    uid: int
    raw: bytes


@dataclass(frozen=True)
class Classified:
    kind: Kind
    rfc_message_id: str
    parsed: ParsedMail | None = None
    bounce: Bounce | None = None
    is_auto_reply: bool = False
    reply_text: str = ""
    received_at: datetime | None = None
    error: str | None = None


def synthetic_message_id(raw: bytes) -> str:
    """A stable id for a message without Message-ID: the same bytes always give the same id."""
    return f"<sha256-{hashlib.sha256(raw).hexdigest()[:40]}@mailgw.invalid>"


def _received_at(parsed: ParsedMail) -> datetime:
    current = now()
    if parsed.date is None or parsed.date > current:
        return current
    return parsed.date


def classify(raw: bytes) -> Classified:
    """Never raises: anything the parser cannot read comes back as `unparseable`."""
    try:
        msg = parse_message(raw)
        parsed = parse_inbound(raw)
    except UnparseableMail as exc:
        return Classified("unparseable", synthetic_message_id(bytes(raw or b"")), error=str(exc))
    except Exception as exc:  # a last guard: one message must never stop a poller
        return Classified("unparseable", synthetic_message_id(bytes(raw or b"")),
                          error=f"{type(exc).__name__}: {exc}")
    rfc_id = parsed.message_id or synthetic_message_id(raw)
    try:
        bounce = parse_bounce(msg)
        auto = is_auto_reply(parsed.headers, parsed.subject)
        reply_text = strip_quoted(parsed.text)
    except Exception as exc:
        return Classified("unparseable", rfc_id, error=f"{type(exc).__name__}: {exc}")
    if bounce is not None:
        return Classified("bounce", rfc_id, parsed=parsed, bounce=bounce, is_auto_reply=True,
                          received_at=_received_at(parsed))
    if parsed.from_addr is None:
        return Classified("unparseable", rfc_id, parsed=parsed, error="no sender address")
    return Classified("mail", rfc_id, parsed=parsed, is_auto_reply=auto, reply_text=reply_text,
                      received_at=_received_at(parsed))
