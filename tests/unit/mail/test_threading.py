"""Tests for gateway.mail.threading."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.mail.threading import (
    MAX_REFERENCES,
    forward_subject,
    new_message_id,
    normalize_msgid,
    parse_msgid_list,
    references_for_reply,
    reply_subject,
)


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        ("Hello", "Re: Hello"),
        ("Re: Hello", "Re: Hello"),
        ("RE: Re: re: Hello", "Re: Hello"),
        ("Aw: SV: Re[2]: Hello", "Re: Hello"),
        ("Re(3): Re^2: Hello", "Re: Hello"),
        ("Re : Bonjour", "Re: Bonjour"),
        ("  re:Hello  ", "Re: Hello"),
        ("Fwd: Hello", "Re: Fwd: Hello"),
        ("Revenue: Q3", "Re: Revenue: Q3"),
        ("Hello\r\n world", "Re: Hello world"),
        ("", "Re:"),
    ],
)
def test_reply_subject(subject: str, expected: str) -> None:
    assert reply_subject(subject) == expected


@given(st.text())
def test_reply_subject_is_idempotent(subject: str) -> None:
    once = reply_subject(subject)
    assert reply_subject(once) == once
    assert "\n" not in once and "\r" not in once


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        ("Hello", "Fwd: Hello"),
        ("Fwd: Hello", "Fwd: Hello"),
        ("FW: fwd: Hello", "Fwd: Hello"),
        ("Re: Hello", "Fwd: Re: Hello"),
    ],
)
def test_forward_subject(subject: str, expected: str) -> None:
    assert forward_subject(subject) == expected


@given(st.text())
def test_forward_subject_is_idempotent(subject: str) -> None:
    assert forward_subject(forward_subject(subject)) == forward_subject(subject)


def test_normalize_msgid() -> None:
    assert normalize_msgid("abc@x") == "<abc@x>"
    assert normalize_msgid(" <abc@x> ") == "<abc@x>"
    assert normalize_msgid("< abc @x >") == "<abc@x>"
    assert normalize_msgid("junk <a@b> more") == "<a@b>"
    with pytest.raises(ValueError):
        normalize_msgid(" <> ")


def test_parse_msgid_list() -> None:
    assert parse_msgid_list(None) == []
    assert parse_msgid_list("") == []
    assert parse_msgid_list("<a@x>\r\n <b@x> <a@x>") == ["<a@x>", "<b@x>"]
    assert parse_msgid_list("<a@x> (comment) garbage <c@y>") == ["<a@x>", "<c@y>"]
    assert parse_msgid_list("bare@x.example, other@y") == ["<bare@x.example>", "<other@y>"]
    assert parse_msgid_list("no ids here") == []
    assert parse_msgid_list("<<>> <  >") == []


def test_references_for_reply() -> None:
    assert references_for_reply("<p@x>", ["<r@x>", "<q@x>"]) == ["<r@x>", "<q@x>", "<p@x>"]
    # Without References, the parent's In-Reply-To is used.
    assert references_for_reply("<p@x>", [], ["<q@x>"]) == ["<q@x>", "<p@x>"]
    assert references_for_reply("p@x", []) == ["<p@x>"]
    # Duplicates (including the parent itself) are removed, order kept.
    assert references_for_reply("<p@x>", ["<a@x>", "<p@x>", "<a@x>", ""]) == ["<a@x>", "<p@x>"]


def test_references_are_capped_keeping_root_and_recent() -> None:
    refs = [f"<m{i}@x>" for i in range(50)]
    out = references_for_reply("<parent@x>", refs)
    assert len(out) == MAX_REFERENCES
    assert out[0] == "<m0@x>"
    assert out[-1] == "<parent@x>"
    assert out[-2] == "<m49@x>"


def test_new_message_id() -> None:
    ids = {new_message_id("Acme.Example") for _ in range(100)}
    assert len(ids) == 100
    for msgid in ids:
        assert re.fullmatch(r"<[A-Za-z0-9_-]{24}@acme\.example>", msgid)
    assert new_message_id("alice@tryacme.example").endswith("@tryacme.example>")
    assert new_message_id("bücher.example").endswith("@xn--bcher-kva.example>")
    with pytest.raises(ValueError):
        new_message_id(" ")
    with pytest.raises(ValueError):
        new_message_id("bad domain")
