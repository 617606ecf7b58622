"""Tests for gateway.mail.text."""

from __future__ import annotations

import pytest

from gateway.mail.text import derive_parts, html_to_text, looks_like_html, text_to_html


def test_html_to_text_keeps_structure_and_trims() -> None:
    html = "<html><body><p>Hello <b>world</b></p><ul><li>one</li><li>two</li></ul></body></html>"
    text = html_to_text(html)
    assert text.startswith("Hello world")
    assert "one" in text and "two" in text
    assert text == text.strip()
    assert "<" not in text


def test_html_to_text_empty_and_entities() -> None:
    assert html_to_text("") == ""
    assert html_to_text("   ") == ""
    assert html_to_text("<p>Fish &amp; chips &lt;3</p>") == "Fish & chips <3"


def test_html_to_text_collapses_blank_runs() -> None:
    assert "\n\n\n" not in html_to_text("<p>a</p><br><br><br><br><p>b</p>")


def test_text_to_html_escapes_and_paragraphs() -> None:
    html = text_to_html("Hi <Bob> & co,\nline two\n\n\nNew para")
    assert html == "<p>Hi &lt;Bob&gt; &amp; co,<br>\nline two</p>\n<p>New para</p>"
    assert text_to_html("  \n ") == ""
    assert text_to_html("a\r\nb") == "<p>a<br>\nb</p>"


def test_derive_parts() -> None:
    assert derive_parts("hi", None) == ("hi", "<p>hi</p>")
    assert derive_parts(None, "<p>hi</p>") == ("hi", "<p>hi</p>")
    assert derive_parts("t", "<b>h</b>") == ("t", "<b>h</b>")
    # A blank part counts as missing.
    assert derive_parts("  ", "<p>x</p>") == ("x", "<p>x</p>")
    with pytest.raises(ValueError):
        derive_parts(None, None)
    with pytest.raises(ValueError):
        derive_parts("", " ")


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("<p>Hello</p>", True),
        ("Hello<br>there", True),
        ("<div class='x'>a</div>", True),
        ("<!DOCTYPE html><html></html>", True),
        ("<custom>x</custom>", True),
        ("Hello there", False),
        ("a < b and c > d", False),
        ("Reach me at <bob@example.com>", False),
        ("", False),
    ],
)
def test_looks_like_html(body: str, expected: bool) -> None:
    assert looks_like_html(body) is expected
