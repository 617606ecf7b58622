"""Conversions between the plain-text and HTML bodies of a message."""

from __future__ import annotations

import html as _html
import re

from inscriptis import get_text
from inscriptis.model.config import ParserConfig

# Tags that almost never appear in plain prose; a body containing one is treated as HTML.
_HTML_TAG = re.compile(
    r"</?(html|head|body|p|div|span|br|a|b|i|u|em|strong|table|tr|td|th|ul|ol|li|"
    r"h[1-6]|img|blockquote|pre|font|center|hr|meta|style|section|article)\b[^<>]*>",
    re.IGNORECASE,
)
_BLANK_LINES = re.compile(r"\n{3,}")
_PARAGRAPH_SPLIT = re.compile(r"\n[ \t]*\n+")

_CONFIG = ParserConfig(display_links=False, display_images=False)


def html_to_text(html: str) -> str:
    """Render HTML as readable plain text (inscriptis keeps lists and tables legible)."""
    if not html or not html.strip():
        return ""
    try:
        text = get_text(html, _CONFIG)
    except Exception:
        # lxml can choke on pathological markup; a crude tag strip beats losing the body.
        text = _html.unescape(re.sub(r"<[^>]*>", " ", html))
    # inscriptis pads lines with spaces for layout; trailing spaces carry no meaning in mail.
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").split("\n")]
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()


def text_to_html(text: str) -> str:
    """Render plain text as minimal HTML: escaped, blank lines as paragraphs, newlines as <br>."""
    normalized = text.replace("\r\n", "\n").replace("\r", "\n").strip()
    if not normalized:
        return ""
    paragraphs = _PARAGRAPH_SPLIT.split(normalized)
    rendered = []
    for para in paragraphs:
        lines = [_html.escape(line, quote=False) for line in para.split("\n")]
        rendered.append("<p>" + "<br>\n".join(lines) + "</p>")
    return "\n".join(rendered)


def looks_like_html(s: str) -> bool:
    """Guess whether a free-form body (e.g. the inbox reply `body`) is HTML rather than text."""
    if not s:
        return False
    if _HTML_TAG.search(s):
        return True
    # A doctype or a closing tag of any kind is a strong signal too.
    return bool(re.search(r"<!doctype\s+html|</[a-z][a-z0-9]*\s*>", s, re.IGNORECASE))


def derive_parts(text: str | None, html: str | None) -> tuple[str, str]:
    """Return (text, html), deriving whichever is missing from the other."""
    text = text if text and text.strip() else None
    html = html if html and html.strip() else None
    if text is not None and html is not None:
        return text, html
    if text is not None:
        return text, text_to_html(text)
    if html is not None:
        return html_to_text(html), html
    raise ValueError("a message needs a text or an HTML body")
