"""Tests for gateway.mail.decode."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.mail.decode import (
    DEFAULT_FILENAME,
    decode_bytes,
    decode_header_value,
    sanitize_filename,
    unsurrogate,
)


def test_decode_header_value() -> None:
    assert decode_header_value("Hello =?utf-8?q?W=C3=B6rld?= and =?utf-8?q?a?= =?utf-8?q?b?= x") == (
        "Hello Wörld and ab x"
    )
    assert decode_header_value("=?iso-8859-1?q?Gr=FC=DFe?=") == "Grüße"
    assert decode_header_value("=?x-bogus?q?W=C3=B6rld?= x") == "Wörld x"
    assert decode_header_value("plain \r\n  folded ") == "plain folded"
    # 8-bit header bytes arrive from the parser as surrogate escapes.
    assert decode_header_value("caf\udcc3\udca9") == "café"
    assert decode_header_value("caf\udce9") == "café"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("report.pdf", "report.pdf"),
        ("../../etc/passwd", "passwd"),
        ("C:\\Users\\x\\evil.exe", "evil.exe"),
        ("..hidden", "hidden"),
        ("a\x00b\x1fc\u202e.txt", "abc.txt"),
        ("what?.txt", "what_.txt"),
        ("=?utf-8?q?R=C3=A9sum=C3=A9.pdf?=", "Résumé.pdf"),
        ("", "attachment.pdf"),
        (None, "attachment.pdf"),
        ("...", "attachment.pdf"),
    ],
)
def test_sanitize_filename(name: str | None, expected: str) -> None:
    assert sanitize_filename(name, "application/pdf") == expected


def test_sanitize_filename_keeps_extension_when_truncating() -> None:
    out = sanitize_filename("x" * 500 + ".pdf")
    assert len(out) == 200 and out.endswith(".pdf")
    assert sanitize_filename(None, "application/x-unknown-thing") == DEFAULT_FILENAME


def test_decode_bytes_fallbacks() -> None:
    assert decode_bytes("é".encode(), "utf-8") == "é"
    assert decode_bytes(b"\xe9", "iso-8859-1") == "é"
    assert decode_bytes("é".encode(), "x-bogus") == "é"
    assert decode_bytes(b"\xe9", "x-bogus") == "é"  # not utf-8: latin-1
    assert decode_bytes(b"\xe9", "base64") == "é"  # not a text codec
    assert decode_bytes("é".encode(), "us-ascii") == "é"  # mislabelled 8-bit


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=120).filter(lambda t: "=?" not in t))
def test_plain_values_collapse_whitespace_like_the_regex(value: str) -> None:
    # The fast path for values without an encoded-word must collapse exactly what `\s+` does.
    assert decode_header_value(value) == re.sub(r"\s+", " ", unsurrogate(value)).strip()
