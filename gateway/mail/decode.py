"""Lenient decoding of header values, body bytes and attachment filenames."""

from __future__ import annotations

import codecs
import mimetypes
import re
import unicodedata
from email.header import decode_header

MAX_HEADER_VALUE = 16_384  # huge headers are cut, not rejected
MAX_FILENAME = 200
DEFAULT_FILENAME = "attachment"
_UNSAFE_FILENAME = re.compile(r'[\\/:*?"<>|]+')
_WHITESPACE = re.compile(r"\s+")


def decode_bytes(data: bytes, charset: str | None) -> str:
    """Decode with the declared charset when it is a real text codec, else utf-8, else latin-1."""
    if charset:
        name = charset.strip().strip("\"'").lower()
        try:
            if codecs.lookup(name).name not in {"ascii", "us-ascii"} or data.isascii():
                return data.decode(name, errors="replace")
        except (LookupError, ValueError, TypeError):
            pass  # bogus or non-text codec ("base64"): fall through to guessing
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def unsurrogate(value: str) -> str:
    # Raw 8-bit header bytes arrive as surrogate escapes; most such mailers meant UTF-8.
    if value.isascii() or not any("\udc80" <= c <= "\udcff" for c in value):
        return value
    return decode_bytes(value.encode("utf-8", "surrogateescape"), None)


def decode_header_value(raw: str) -> str:
    """Decode RFC 2047 encoded-words leniently; unfold and trim."""
    raw = unsurrogate(raw)[:MAX_HEADER_VALUE]
    if "=?" not in raw:  # no encoded-word: decode_header would hand the value back as it is
        return " ".join(raw.split())  # = _WHITESPACE.sub(" ", raw).strip(), for short values faster
    try:
        chunks = decode_header(raw)
    except Exception:
        chunks = [(raw, None)]
    out: list[str] = []
    for chunk, charset in chunks:
        out.append(chunk if isinstance(chunk, str) else decode_bytes(chunk, charset))
    value = "".join(out)  # decode_header keeps the spaces that separate plain chunks
    return _WHITESPACE.sub(" ", value).strip()


def _drop_controls(s: str) -> str:
    # Control, format (bidi overrides) and lone surrogate characters have no place in a name.
    return "".join(c for c in s if unicodedata.category(c) not in {"Cc", "Cf", "Cs"})


def sanitize_filename(name: str | None, content_type: str = "application/octet-stream") -> str:
    """A filename safe to store and serve: no paths, control characters or leading dots."""
    cleaned = decode_header_value(_drop_controls(name)) if name else ""
    cleaned = _drop_controls(cleaned.replace("\\", "/").rsplit("/", 1)[-1])
    cleaned = _UNSAFE_FILENAME.sub("_", cleaned).strip().lstrip(".").strip()
    if not cleaned:
        try:
            ext = mimetypes.guess_extension(content_type, strict=False)
        except Exception:  # a malformed type string must not break attachment storage
            ext = None
        return DEFAULT_FILENAME + (ext or "")
    if len(cleaned) > MAX_FILENAME:
        stem, dot, ext = cleaned.rpartition(".")
        keep = f".{ext}" if dot and 0 < len(ext) <= 16 else ""
        cleaned = (stem if keep else cleaned)[: MAX_FILENAME - len(keep)] + keep
    return cleaned
