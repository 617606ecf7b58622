"""Tolerant parsing of inbound mail into a flat, typed record."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from email import message_from_bytes, policy
from email.message import EmailMessage, Message
from email.parser import BytesParser
from email.policy import Policy
from email.utils import getaddresses, parsedate_to_datetime
from typing import TypeVar

from gateway.mail import syntax
from gateway.mail.decode import (
    MAX_HEADER_VALUE,
    decode_bytes,
    decode_header_value,
    sanitize_filename,
    unsurrogate,
)
from gateway.mail.text import html_to_text
from gateway.mail.threading import normalize_msgid, parse_msgid_list

T = TypeVar("T")

MAX_DEPTH = 20  # nested multiparts/messages deeper than this are junk or an attack
MAX_PARTS = 500
_BOUNDARY_LINE = re.compile(rb"^--([^\s]{1,200}?)(--)?\s*$", re.MULTILINE)
_WHITESPACE = re.compile(r"\s+")

# The common shapes of Content-Type and address headers, read straight from the raw value:
# for these the `email` package's parsers (header registry, get_param, getaddresses) give a
# known result, so they are skipped; anything else goes through them (see `_simple_text` and
# `_addresses`; tests/unit/mail/test_parse_shortcuts.py pins both to the general path).
_WS = r"[ \t\r\n]*"  # folding whitespace only: not every Unicode space `\s` would match
_SIMPLE_TEXT_TYPE = re.compile(
    rf"{_WS}(text/(?:plain|html)){_WS}"
    rf"((?:;{_WS}[A-Za-z0-9-]+{_WS}={_WS}(?:[A-Za-z0-9_.:+/-]+|\"[A-Za-z0-9_.:+/ -]*\"){_WS})*)",
    re.IGNORECASE)
_SIMPLE_PARAM = re.compile(
    rf';{_WS}([A-Za-z0-9-]+){_WS}={_WS}(?:([A-Za-z0-9_.:+/-]+)|"([A-Za-z0-9_.:+/ -]*)")')
_ADDR_SPEC = syntax.PLAIN_ADDR_SPEC
_SIMPLE_MAILBOX = re.compile(
    rf"{_WS}(?:({_ADDR_SPEC})|((?:[A-Za-z0-9]+ )*[A-Za-z0-9]+)?{_WS}<({_ADDR_SPEC})>){_WS}")


class UnparseableMail(Exception):
    """The input is not recognisably an email message (empty, or no header section)."""


@dataclass(frozen=True)
class ParsedAttachment:
    """A file carried by an inbound message (inline images included)."""

    filename: str
    content_type: str
    data: bytes
    content_id: str | None = None
    inline: bool = False


@dataclass(frozen=True, kw_only=True)
class ParsedMail:
    """The parts of an inbound message the gateway uses; addresses have lower-cased domains."""

    message_id: str | None
    in_reply_to: list[str]
    references: list[str]
    from_addr: str | None
    from_name: str | None
    to: list[str]
    cc: list[str]
    reply_to: list[str]
    subject: str
    date: datetime | None
    text: str
    html: str | None
    attachments: list[ParsedAttachment]
    headers: dict[str, list[str]] = field(default_factory=dict)


def _safe(fn: Callable[[], T], default: T) -> T:
    # The email package still has parser crashes on adversarial input; never let them escape.
    try:
        return fn()
    except Exception:
        return default


def _raw_headers(msg: Message) -> dict[str, list[str]]:
    headers: dict[str, list[str]] = {}
    for name, value in msg.raw_items():
        key = str(name).strip().lower()
        headers.setdefault(key, []).append(str(value)[:MAX_HEADER_VALUE])
    return headers


def _first(headers: dict[str, list[str]], name: str) -> str | None:
    values = headers.get(name)
    return values[0] if values else None


def _simple_addresses(values: list[str]) -> list[tuple[str, str]] | None:
    """What `getaddresses` gives for a list of plain `addr@domain` / `Name <addr@domain>`
    entries (ASCII atoms only, no quotes, comments or groups); None for anything else."""
    pairs: list[tuple[str, str]] = []
    for entry in ", ".join(values).split(","):  # getaddresses joins the values with ", "
        found = _SIMPLE_MAILBOX.fullmatch(entry)
        if found is None:
            return None
        bare, name, routed = found.groups()
        pairs.append(("", bare) if bare else (name or "", routed))
    return pairs


def _addresses(raw_values: list[str] | None, shortcut: bool = True) -> list[tuple[str, str]]:
    """(display name, address with lower-cased domain) pairs; entries without '@' are skipped."""
    if not raw_values:
        return []
    empty: list[tuple[str, str]] = []
    pairs = _simple_addresses(raw_values) if shortcut else None
    if pairs is None:
        pairs = _safe(lambda: getaddresses([unsurrogate(v) for v in raw_values]), empty)
    out: list[tuple[str, str]] = []
    for name, addr in pairs:
        addr = addr.strip()
        if "@" not in addr:
            continue
        local, _, domain = addr.rpartition("@")
        out.append((decode_header_value(name), f"{local}@{domain.lower()}"))
    return out


# The Date form mailers write (RFC 5322 3.3 without obsolete syntax): read by one regular
# expression, with the result `parsedate_to_datetime` gives for it; anything else goes to it.
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_PLAIN_DATE = re.compile(
    r"(?:(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), )?(\d{1,2}) (" + "|".join(_MONTHS) + r") ([1-9]\d{3})"
    r" (\d\d):(\d\d):(\d\d) ([+-])(\d\d)(\d\d)")


def _date(raw: str | None, shortcut: bool = True) -> datetime | None:
    if not raw:
        return None
    value = _WHITESPACE.sub(" ", raw).strip()
    plain = _PLAIN_DATE.fullmatch(value) if shortcut else None
    try:
        if plain is not None:
            day, month, year, hour, minute, second, sign, tzh, tzm = plain.groups()
            offset = (int(tzh) * 3600 + int(tzm) * 60) * (-1 if sign == "-" else 1)
            return datetime(int(year), _MONTHS.index(month) + 1, int(day), int(hour), int(minute),
                            int(second), tzinfo=timezone(timedelta(seconds=offset)))
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)  # "-0000": UTC, zone unknown


def _message_id(raw: str | None) -> str | None:
    if not raw:
        return None
    ids = parse_msgid_list(raw)
    if ids:
        return ids[0]
    return _safe(lambda: normalize_msgid(raw), None)


@dataclass
class _Body:
    texts: list[str] = field(default_factory=list)
    htmls: list[str] = field(default_factory=list)
    attachments: list[ParsedAttachment] = field(default_factory=list)
    parts: int = 0


def _simple_text(part: Message) -> tuple[str, str | None] | None:
    """(content type, charset) of a single text/plain or text/html part whose one Content-Type
    header has only plain token or quoted parameters (none of them a file name) and which has
    no Content-Disposition: what `get_content_type` and `get_param("charset")` would return,
    read from the raw header without the header registry. None for any other part."""
    if _safe(part.is_multipart, True):
        return None
    value: str | None = None
    for name, raw in part.raw_items():
        key = name.lower()
        if key == "content-disposition" or (key == "content-type" and value is not None):
            return None
        if key == "content-type":
            if not isinstance(raw, str):
                return None
            value = raw
    if value is None:  # no Content-Type: the default type, no parameters
        return ("text/plain", None) if part.get_default_type() == "text/plain" else None
    found = _SIMPLE_TEXT_TYPE.fullmatch(value)
    if found is None:
        return None
    charset: str | None = None
    for param in _SIMPLE_PARAM.finditer(found.group(2)):
        key = param.group(1).lower()
        if key == "name":
            return None  # a named part is an attachment: the general path decides
        if key == "charset" and charset is None:  # get_param returns the first one
            charset = param.group(2) if param.group(2) is not None else param.group(3)
    return found.group(1).lower(), charset


def _content_type(part: Message) -> str:
    ctype = _safe(part.get_content_type, "")
    if ctype:
        return ctype
    # Fall back to the raw header when the structured parser gave up on it.
    for name, value in part.raw_items():
        if str(name).lower() == "content-type":
            guess = str(value).split(";", 1)[0].strip().lower()
            if re.fullmatch(r"[a-z0-9!#$&^_.+-]+/[a-z0-9!#$&^_.+-]+", guess):
                return guess
    return "text/plain"


def _param(part: Message, name: str, header: str = "content-type") -> str | None:
    value = _safe(lambda: part.get_param(name, header=header), None)
    if value is None:
        return None
    if isinstance(value, tuple):  # RFC 2231 (charset, language, value) triple
        return decode_bytes(str(value[2]).encode("latin-1", "replace"), value[0])
    return str(value)


def _payload_bytes(part: Message) -> bytes:
    data = _safe(lambda: part.get_payload(decode=True), None)
    if isinstance(data, bytes):
        return data
    empty: object = ""
    raw = _safe(lambda: part.get_payload(), empty)
    return raw.encode("utf-8", "surrogateescape") if isinstance(raw, str) else b""


def _disposition(part: Message) -> str | None:
    return _safe(part.get_content_disposition, None)


def _leaf(part: Message, ctype: str, body: _Body) -> None:
    disposition = _disposition(part)
    filename = _safe(part.get_filename, None) or _param(part, "name")
    if ctype in {"text/plain", "text/html"} and disposition != "attachment" and not filename:
        text = decode_bytes(_payload_bytes(part), _param(part, "charset"))
        (body.texts if ctype == "text/plain" else body.htmls).append(text)
        return
    cid = _safe(lambda: part.get("content-id"), None)
    body.attachments.append(
        ParsedAttachment(
            filename=sanitize_filename(filename, ctype),
            content_type=ctype,
            data=_payload_bytes(part),
            content_id=_message_id(str(cid)) if cid else None,
            inline=disposition == "inline",
        )
    )


def _attached_message(part: Message, body: _Body) -> None:
    inner = _safe(part.get_payload, None)
    sub = inner[0] if isinstance(inner, list) and inner else None
    data, subject = _payload_bytes(part), ""
    if isinstance(sub, Message):
        # compat32 writes headers back as received instead of refolding them.
        data = _safe(lambda: sub.as_bytes(policy=policy.compat32), data)
        subject = decode_header_value(_first(_raw_headers(sub), "subject") or "")
    name = _safe(part.get_filename, None) or (f"{subject[:80]}.eml" if subject else "message.eml")
    body.attachments.append(
        ParsedAttachment(sanitize_filename(name, "message/rfc822"), "message/rfc822", data)
    )


def _walk(part: Message, body: _Body, depth: int, shortcut: bool = True,
          simple: tuple[str, str | None] | None = None) -> None:
    """`simple` is `_simple_text(part)` when the caller already has it (else it is looked up)."""
    body.parts += 1
    if depth > MAX_DEPTH or body.parts > MAX_PARTS:
        return
    if simple is None and shortcut:
        simple = _simple_text(part)
    if simple is not None:  # a plain text or HTML body: what _leaf does for it, minus look-ups
        ctype, charset = simple
        text = decode_bytes(_payload_bytes(part), charset)
        (body.texts if ctype == "text/plain" else body.htmls).append(text)
        return
    ctype = _content_type(part)
    if ctype in {"message/rfc822", "message/global"}:
        _attached_message(part, body)  # an attached mail's body is not ours
        return
    children = _safe(part.get_payload, None) if _safe(part.is_multipart, False) else None
    if not isinstance(children, list):
        if ctype.startswith("multipart/"):
            ctype = "text/plain"  # broken multipart (no boundary found): keep the raw text
        _leaf(part, ctype, body)
        return
    if ctype != "multipart/alternative":
        for child in children:
            if isinstance(child, Message):
                _walk(child, body, depth + 1, shortcut)
        return
    # Alternatives carry the same content: keep the first plain and the last (richest) HTML.
    found = [_Body() for _ in children]
    for child, sub in zip(children, found, strict=True):
        if isinstance(child, Message):
            _walk(child, sub, depth + 1, shortcut)
            body.parts += sub.parts
            body.attachments.extend(sub.attachments)
    texts = [s.texts for s in found if s.texts]
    htmls = [s.htmls for s in found if s.htmls]
    body.texts.extend(texts[0] if texts else [])
    body.htmls.extend(htmls[-1] if htmls else [])


def _recover_boundary(raw: bytes, msg: Message) -> Message:
    """Re-parse a multipart whose boundary parameter is missing, guessing it from the body."""
    if not _content_type(msg).startswith("multipart/") or _safe(msg.is_multipart, False):
        return msg
    head, sep, rest = raw.partition(b"\r\n\r\n") if b"\r\n\r\n" in raw else raw.partition(b"\n\n")
    found = _BOUNDARY_LINE.search(rest)
    if not sep or not found:
        return msg
    boundary = found.group(1).decode("ascii", "replace").replace('"', "")
    subtype = _content_type(msg).split("/", 1)[1]
    header = f'Content-Type: multipart/{subtype}; boundary="{boundary}"'.encode()
    lines = [ln for ln in head.splitlines() if not ln.lower().startswith(b"content-type:")]
    rebuilt = b"\r\n".join([*lines, header]) + b"\r\n\r\n" + rest
    reparsed = _safe(lambda: message_from_bytes(rebuilt, policy=policy.default), None)
    return reparsed if reparsed is not None and _safe(reparsed.is_multipart, False) else msg


# One header field of a section the feed parser reads without a defect or a special case: a
# name (printable ASCII but ":") and a colon, continuation lines starting with a space or tab,
# every line ending in CRLF or LF (no bare CR: the parser splits lines there too). A plain
# header section is such fields and then one blank line.
_FIELD = re.compile(r"[\041-\071\073-\176]+:[^\r\n]*\r?\n(?:[ \t][^\r\n]*\r?\n)*")


def _plain_head(head: str, parse_policy: Policy) -> Message | None:
    """The message the feed parser builds from a header section of the plain shape (no body
    yet), built directly: each field becomes (name, value) as the policy's
    `header_source_parse` makes it. None for any other header section."""
    fields: list[str] = []
    pos, match = 0, _FIELD.match
    while (found := match(head, pos)) is not None:
        fields.append(found.group())
        pos = found.end()
    if not fields or head[pos:] not in ("\n", "\r\n"):  # not all fields, or no blank line
        return None
    factory = parse_policy.message_factory or Message
    msg: Message = factory(policy=parse_policy)
    for text in fields:
        name, value = text.split(":", 1)
        msg.set_raw(name, value.lstrip(" \t").rstrip("\r\n"))
    return msg


def message_from_raw(raw: bytes, parse_policy: Policy) -> Message:
    """`email.message_from_bytes(raw, policy=parse_policy)`, the same object, built cheaper
    when the message is a single part.

    The feed parser handles a body line by line, although for a type that is neither
    multipart/* nor message/* it only joins those lines back into the payload. So the header
    section (up to the first blank line) is parsed alone and, when every line of it was a
    header and the type is not multipart/* or message/*, the rest of the bytes become the
    payload exactly as the parser would have set it. A header section of the plain shape
    (`_plain_head`) is split by one regular expression instead of the feed parser's line
    machinery. Anything else is parsed whole."""
    crlf, lf = raw.find(b"\r\n\r\n"), raw.find(b"\n\n")
    ends = [i + n for i, n in ((crlf, 4), (lf, 2)) if i >= 0]
    if ends:
        end = min(ends)
        head = raw[:end]
        msg = _plain_head(head.decode("ascii", "surrogateescape"), parse_policy)
        if msg is None:
            msg = BytesParser(policy=parse_policy).parsebytes(head, headersonly=True)
        if (msg.get_payload() in ("", None) and not msg.defects
                and msg.get_content_maintype() not in {"multipart", "message"}):
            msg.set_payload(raw[end:].decode("ascii", "surrogateescape"))
            return msg
    return message_from_bytes(raw, policy=parse_policy)


def parse_message(raw: bytes) -> EmailMessage:
    """Parse bytes with policy.default (the object auto-reply and bounce detection accept)."""
    if not isinstance(raw, bytes | bytearray) or not raw.strip():
        raise UnparseableMail("empty input")
    try:
        msg = message_from_raw(bytes(raw), policy.default)
    except Exception as exc:  # the parser is meant never to raise; be sure
        raise UnparseableMail(f"parser failed: {type(exc).__name__}") from exc
    if not isinstance(msg, EmailMessage) or not list(msg.raw_items()):
        raise UnparseableMail("no header section")
    return msg


def parse_inbound(raw: bytes, msg: EmailMessage | None = None, *, shortcut: bool = True) -> ParsedMail:
    """Parse an inbound message; raises only UnparseableMail, for hopeless input.

    `msg` is `raw` already parsed by `parse_message` (so a caller that needs the EmailMessage
    too parses the bytes once). `shortcut=False` reads every header through the `email`
    package's accessors (the reference the raw-header shortcuts are tested against)."""
    if msg is None:
        msg = parse_message(raw)
    try:
        return _parse(bytes(raw), msg, shortcut)
    except UnparseableMail:
        raise
    except Exception as exc:  # a last guard so one odd message cannot stop a poller
        raise UnparseableMail(f"{type(exc).__name__}: {exc}") from exc


def _parse(raw: bytes, msg: EmailMessage, shortcut: bool) -> ParsedMail:
    headers = _raw_headers(msg)
    decoded = {k: [decode_header_value(v) for v in vs] for k, vs in headers.items()}
    body = _Body()
    simple = _simple_text(msg) if shortcut else None
    if simple is not None:  # a single text part: no multipart to recover
        _walk(msg, body, 0, shortcut, simple)
    else:
        _walk(_recover_boundary(raw, msg), body, 0, shortcut)
    html = "\n".join(body.htmls).replace("\r\n", "\n") if body.htmls else None
    text = "\n\n".join(t.strip("\r\n") for t in body.texts).replace("\r\n", "\n")
    if not text.strip() and html:
        text = html_to_text(html)
    sender = _addresses(headers.get("from"), shortcut)
    return ParsedMail(
        message_id=_message_id(_first(headers, "message-id")),
        in_reply_to=parse_msgid_list(" ".join(headers.get("in-reply-to", []))),
        references=parse_msgid_list(" ".join(headers.get("references", []))),
        from_addr=sender[0][1] if sender else None,
        from_name=(sender[0][0] or None) if sender else None,
        to=[addr for _, addr in _addresses(headers.get("to"), shortcut)],
        cc=[addr for _, addr in _addresses(headers.get("cc"), shortcut)],
        reply_to=[addr for _, addr in _addresses(headers.get("reply-to"), shortcut)],
        subject=(decoded.get("subject") or [""])[0],
        date=_date(_first(headers, "date"), shortcut),
        text=text.strip(),
        html=html,
        attachments=body.attachments,
        headers=decoded,
    )
