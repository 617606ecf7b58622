"""Render a forwarded thread in Gmail's "Forwarded message" style (text and HTML)."""

from __future__ import annotations

import html as _html
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo

from gateway.mail.text import derive_parts, html_to_text, text_to_html

FORWARD_MARKER = "---------- Forwarded message ---------"

# English names on purpose: strftime's %a/%b follow the process locale.
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_BODY = re.compile(r"<body\b[^>]*>(.*?)(?:</body\s*>|\Z)", re.IGNORECASE | re.DOTALL)
_DANGEROUS = re.compile(r"<(script|style|head|title)\b.*?</\1\s*>", re.IGNORECASE | re.DOTALL)


@dataclass(frozen=True, kw_only=True)
class ChainMessage:
    """One message of the thread being forwarded."""

    from_addr: str
    from_name: str | None
    to: list[str]
    date: datetime
    subject: str
    text: str | None
    html: str | None = None
    cc: list[str] = field(default_factory=list)


def format_forward_date(dt: datetime, tz: tzinfo | None = None) -> str:
    """Gmail-like date: "Mon, 3 Jun 2024 at 15:00" (in `tz` when given)."""
    if tz is not None:
        dt = (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).astimezone(tz)
    return f"{_DAYS[dt.weekday()]}, {dt.day} {_MONTHS[dt.month - 1]} {dt.year} at {dt:%H:%M}"


def _sender(msg: ChainMessage) -> str:
    return f"{msg.from_name} <{msg.from_addr}>" if msg.from_name else msg.from_addr


def _sort_key(msg: ChainMessage) -> datetime:
    # Naive datetimes are taken as UTC so mixed lists still sort instead of raising.
    return msg.date if msg.date.tzinfo else msg.date.replace(tzinfo=UTC)


def _body_text(msg: ChainMessage) -> str:
    if msg.text and msg.text.strip():
        return msg.text.strip()
    return html_to_text(msg.html or "")


def _body_html(msg: ChainMessage) -> str:
    if msg.html and msg.html.strip():
        # A full document cannot be nested; keep what is inside <body> minus active content.
        found = _BODY.search(msg.html)
        inner = found.group(1) if found else msg.html
        return _DANGEROUS.sub("", inner).strip()
    return text_to_html(msg.text or "")


def _header_lines(msg: ChainMessage, tz: tzinfo | None) -> list[tuple[str, str]]:
    lines = [
        ("From", _sender(msg)),
        ("Date", format_forward_date(msg.date, tz)),
        ("Subject", msg.subject),
        ("To", ", ".join(msg.to)),
    ]
    if msg.cc:
        lines.append(("Cc", ", ".join(msg.cc)))
    return lines


def _text_block(msg: ChainMessage, tz: tzinfo | None) -> str:
    head = "\n".join(f"{k}: {v}" for k, v in _header_lines(msg, tz))
    return f"{FORWARD_MARKER}\n{head}\n\n{_body_text(msg)}"


def _html_block(msg: ChainMessage, tz: tzinfo | None) -> str:
    esc = _html.escape
    rows = []
    for key, value in _header_lines(msg, tz):
        if key == "From" and msg.from_name:
            value_html = (
                f'<strong class="gmail_sendername" dir="auto">{esc(msg.from_name)}</strong> '
                f'<span dir="auto">&lt;{esc(msg.from_addr)}&gt;</span>'
            )
        else:
            value_html = esc(value)
        rows.append(f"{key}: {value_html}<br>")
    return (
        '<div class="gmail_quote"><div dir="ltr" class="gmail_attr">'
        f"{FORWARD_MARKER}<br>{''.join(rows)}</div><br><br>"
        f"{_body_html(msg)}</div>"
    )


def render_forward(
    note_text: str | None,
    note_html: str | None,
    chain: list[ChainMessage],
    tz: tzinfo | None = None,
) -> tuple[str, str]:
    """Return (text, html): the optional note, then one forwarded block per message, oldest first."""
    ordered = sorted(chain, key=_sort_key)  # stable: equal dates keep the caller's order
    try:
        note = derive_parts(note_text, note_html)
    except ValueError:
        note = None  # no note at all: only the chain is sent
    text_blocks = [_text_block(m, tz) for m in ordered]
    html_blocks = [_html_block(m, tz) for m in ordered]
    if note is not None:
        text_blocks.insert(0, note[0].strip())
        html_blocks.insert(0, f'<div dir="ltr">{note[1].strip()}</div>')
    return "\n\n\n".join(text_blocks), "<br>\n".join(html_blocks)
