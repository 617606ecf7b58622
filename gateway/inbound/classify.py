"""The pure first step of ingestion: raw bytes → what the message is (reply, bounce, junk)."""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from datetime import datetime
from email import policy
from email.headerregistry import BaseHeader, HeaderRegistry
from email.message import EmailMessage
from typing import Any, Literal, TypeVar

from gateway.mail.autoreply import is_auto_reply
from gateway.mail.bounce import Bounce, parse_bounce
from gateway.mail.parse import ParsedMail, UnparseableMail, message_from_raw, parse_inbound
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


class _CachingHeaderRegistry(HeaderRegistry):
    """policy.default's header registry, remembering parsed headers by (name, value).

    The `email` package parses a structured header again on every access (the feed parser and
    `get_content_type` alone parse Content-Type several times per part), which was most of the
    classification cost. Header objects are immutable, and most values (Content-Type,
    Content-Transfer-Encoding, MIME-Version) repeat across messages, so a small cache serves
    nearly all of them. Long values are not kept.
    """

    MAX_ENTRIES = 4096
    MAX_VALUE = 512

    def __init__(self) -> None:
        super().__init__()
        self._cache: dict[tuple[str, str], BaseHeader] = {}

    def __call__(self, name: str, value: str) -> BaseHeader:
        key = (name, value)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        header: BaseHeader = super().__call__(name, value)
        if len(value) <= self.MAX_VALUE:
            if len(self._cache) >= self.MAX_ENTRIES:
                self._cache.clear()
            self._cache[key] = header
        return header


# policy.default in every respect but the header cache: parse_inbound, bounce and auto-reply
# detection get the EmailMessage they expect.
_POLICY = policy.default.clone(header_factory=_CachingHeaderRegistry())


def parse_message(raw: bytes) -> EmailMessage:
    """`gateway.mail.parse.parse_message` (same checks and errors) with the caching policy."""
    if not isinstance(raw, bytes | bytearray) or not raw.strip():
        raise UnparseableMail("empty input")
    try:
        msg = message_from_raw(bytes(raw), _POLICY)
    except Exception as exc:  # the parser is meant never to raise; be sure
        raise UnparseableMail(f"parser failed: {type(exc).__name__}") from exc
    if not isinstance(msg, EmailMessage) or not list(msg.raw_items()):
        raise UnparseableMail("no header section")
    return msg


T = TypeVar("T")


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def _field_names(cls: type) -> tuple[str, ...]:
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = tuple(f.name for f in dataclasses.fields(cls))
    return names


def _has_nul(value: Any) -> bool:
    # Runs on every classified message: one loop over an explicit stack, the common types
    # first, no call per string.
    todo = [value]
    while todo:
        cur = todo.pop()
        if isinstance(cur, str):
            if "\x00" in cur:
                return True
        elif isinstance(cur, list | tuple):
            for item in cur:
                if isinstance(item, str):
                    if "\x00" in item:
                        return True
                else:
                    todo.append(item)
        elif isinstance(cur, dict):
            todo.extend(cur)
            todo.extend(cur.values())
        elif dataclasses.is_dataclass(cur) and not isinstance(cur, type):
            todo.extend(getattr(cur, name) for name in _field_names(type(cur)))
    return False


def _drop_nul(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, list):
        return [_drop_nul(v) for v in value]
    if isinstance(value, dict):
        return {_drop_nul(k): _drop_nul(v) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.replace(value, **{
            name: _drop_nul(getattr(value, name)) for name in _field_names(type(value))})
    return value


def nul_free(value: T) -> T:
    """`value` with every U+0000 removed from its text (bytes, e.g. attachment data, are kept).

    PostgreSQL's text and jsonb cannot hold U+0000, and decoded mail can contain it (a QP
    `=00`, an encoded word, a NUL byte in a body): stored as is, the whole batch would fail on
    every retry and stall the mailbox. The character carries nothing readable, so it is dropped.
    """
    return _drop_nul(value) if _has_nul(value) else value


def _received_at(parsed: ParsedMail) -> datetime:
    current = now()
    if parsed.date is None or parsed.date > current:
        return current
    return parsed.date


def classify(raw: bytes) -> Classified:
    """Never raises: anything the parser cannot read comes back as `unparseable`."""
    try:
        msg = parse_message(raw)  # parsed once: the same EmailMessage serves every step below
        parsed = nul_free(parse_inbound(raw, msg))
    except UnparseableMail as exc:
        return Classified("unparseable", synthetic_message_id(bytes(raw or b"")), error=str(exc))
    except Exception as exc:  # a last guard: one message must never stop a poller
        return Classified("unparseable", synthetic_message_id(bytes(raw or b"")),
                          error=f"{type(exc).__name__}: {exc}")
    rfc_id = parsed.message_id or synthetic_message_id(raw)
    try:
        # parse_bounce looks for a delivery-status part or bounce-like headers before it runs
        # any heavier DSN parsing (flufl.bounce only for those without a readable report).
        bounce = nul_free(parse_bounce(msg))
        if bounce is not None:
            return Classified("bounce", rfc_id, parsed=parsed, bounce=bounce, is_auto_reply=True,
                              received_at=_received_at(parsed))
        if parsed.from_addr is None:
            return Classified("unparseable", rfc_id, parsed=parsed, error="no sender address")
        auto = is_auto_reply(parsed.headers, parsed.subject)
        reply_text = strip_quoted(parsed.text)
    except Exception as exc:
        return Classified("unparseable", rfc_id, error=f"{type(exc).__name__}: {exc}")
    return Classified("mail", rfc_id, parsed=parsed, is_auto_reply=auto, reply_text=reply_text,
                      received_at=_received_at(parsed))
