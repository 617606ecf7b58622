"""Tests for gateway.mail.parse."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.mail.decode import DEFAULT_FILENAME
from gateway.mail.parse import UnparseableMail, parse_inbound
from tests.unit.mail import samples


def test_gmail_reply() -> None:
    mail = parse_inbound(samples.GMAIL_REPLY)
    assert mail.message_id == "<CAF=abc123+XyZ@mail.gmail.com>"
    assert mail.in_reply_to == ["<tok1@acme.example>"]
    assert mail.references == ["<root0@acme.example>", "<tok1@acme.example>"]
    assert mail.from_addr == "Morgan@northwind.example"
    assert mail.from_name == "Morgan Lee"
    assert mail.to == ["alice.chen@tryacme.example"]
    assert mail.subject == "Re: Quick question about Northwind"
    assert mail.date == datetime(2024, 6, 4, 9, 12, 44, tzinfo=timezone(timedelta(hours=2)))
    assert mail.text.startswith("Hi Alice,\n\nSounds good — Thursday works for me.")
    assert mail.html is not None and "gmail_quote" in mail.html
    assert mail.attachments == []
    assert mail.headers["return-path"] == ["<morgan@northwind.example>"]


def test_outlook_reply_latin1_and_attachment() -> None:
    mail = parse_inbound(samples.OUTLOOK_REPLY)
    assert mail.from_name == "Jörg Müller"
    assert mail.from_addr == "joerg.mueller@contoso.example"
    assert mail.to == ["alice.chen@tryacme.example"]
    assert mail.subject == "AW: Quick question"
    assert "gerne nächste Woche." in mail.text
    assert "Grüße" in mail.text
    assert mail.html is not None and "nächste" in mail.html
    assert len(mail.attachments) == 1
    att = mail.attachments[0]
    assert (att.filename, att.content_type, att.data) == (
        "Angebot 2024.pdf",
        "application/pdf",
        b"%PDF-1.4",
    )
    assert mail.date == datetime(2024, 6, 4, 7, 30, 1, tzinfo=UTC)


def test_iso8859_text_and_bogus_charset_html() -> None:
    mail = parse_inbound(samples.LATIN1_BOGUS)
    assert mail.from_name == "François"
    assert mail.subject == "Réunion prévue"
    assert mail.text == "Bonjour, la réunion est prévue à 10h."
    assert mail.html is not None and "réunion" in mail.html  # unknown charset: utf-8 guessed


def test_missing_boundary_is_recovered() -> None:
    mail = parse_inbound(samples.MISSING_BOUNDARY)
    assert mail.text == "The body survives."
    assert [a.filename for a in mail.attachments] == ["logo.png"]
    assert mail.attachments[0].data == b"\x89PNG\r\n\x1a\n"


def test_html_only_falls_back_to_text() -> None:
    raw = (
        b"From: a@b.example\r\nSubject: x\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
        b"<p>Hello <b>there</b></p>"
    )
    mail = parse_inbound(raw)
    assert mail.text == "Hello there"
    assert mail.html == "<p>Hello <b>there</b></p>"


def test_missing_headers_are_tolerated() -> None:
    mail = parse_inbound(b"X-Only: header\r\n\r\nbody")
    assert mail.message_id is None and mail.from_addr is None and mail.from_name is None
    assert mail.subject == "" and mail.date is None and mail.to == []
    assert mail.text == "body"


def test_garbage_headers_are_tolerated() -> None:
    raw = (
        b"From: <<<@@>>>\r\nTo: undisclosed-recipients:;\r\nDate: yesterday-ish\r\n"
        b"Message-ID: not-bracketed@x.example\r\nIn-Reply-To: garbage\r\n"
        b"References: <a@x> \xff\xfe <b@x>\r\nSubject: =?bad?Q?x?= \xe9t\xe9\r\n"
        b'Content-Type: text/plain; charset="\r\n\r\nhi \xff'
    )
    mail = parse_inbound(raw)
    assert mail.date is None
    assert mail.to == []
    assert mail.message_id == "<not-bracketed@x.example>"
    assert mail.in_reply_to == []
    assert mail.references == ["<a@x>", "<b@x>"]
    assert mail.text.startswith("hi")
    assert "t" in mail.subject


def test_huge_header_is_cut() -> None:
    raw = b"From: a@b.example\r\nX-Big: " + b"y" * 200_000 + b"\r\nSubject: ok\r\n\r\nbody"
    mail = parse_inbound(raw)
    assert mail.subject == "ok"
    assert len(mail.headers["x-big"][0]) <= 16_384


def test_attached_message_is_an_attachment_not_the_body() -> None:
    raw = samples.crlf(
        """\
From: a@b.example
Subject: see attached
Content-Type: multipart/mixed; boundary="b"

--b
Content-Type: text/plain

outer body
--b
Content-Type: message/rfc822

From: c@d.example
Subject: inner subject

inner body
--b--
"""
    )
    mail = parse_inbound(raw)
    assert mail.text == "outer body"
    assert [a.filename for a in mail.attachments] == ["inner subject.eml"]
    assert b"inner body" in mail.attachments[0].data


def test_inline_image_with_content_id() -> None:
    raw = samples.crlf(
        """\
From: a@b.example
Content-Type: multipart/related; boundary="r"

--r
Content-Type: text/html

<img src="cid:logo@x">
--r
Content-Type: image/gif
Content-ID: <logo@x>
Content-Disposition: inline
Content-Transfer-Encoding: base64

R0lGODlh
--r--
"""
    )
    mail = parse_inbound(raw)
    att = mail.attachments[0]
    assert att.content_id == "<logo@x>" and att.inline
    assert att.filename == DEFAULT_FILENAME + ".gif"


def test_rfc2231_filename() -> None:
    raw = samples.crlf(
        """\
From: a@b.example
Content-Type: multipart/mixed; boundary="b"

--b
Content-Type: text/plain

x
--b
Content-Type: application/octet-stream
Content-Disposition: attachment; filename*=utf-8''%C3%BCber%2F..%2Fpasswd.txt

data
--b--
"""
    )
    assert parse_inbound(raw).attachments[0].filename == "passwd.txt"


@pytest.mark.parametrize("raw", [b"", b"   \r\n", b"\r\n\r\nbody without headers"])
def test_hopeless_input(raw: bytes) -> None:
    with pytest.raises(UnparseableMail):
        parse_inbound(raw)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2000))
def test_arbitrary_bytes_never_raise_anything_else(raw: bytes) -> None:
    try:
        parse_inbound(raw)
    except UnparseableMail:
        pass


_HEADER_NAMES = st.sampled_from(
    [
        "From",
        "To",
        "Cc",
        "Subject",
        "Date",
        "Message-ID",
        "In-Reply-To",
        "References",
        "Content-Type",
        "Content-Transfer-Encoding",
        "Content-Disposition",
        "MIME-Version",
        "Reply-To",
        "X-Weird",
    ]
)
_HEADER_VALUES = st.one_of(
    st.text(max_size=80),
    st.sampled_from(
        [
            'multipart/mixed; boundary="b"',
            "multipart/alternative",
            "text/html; charset=bogus",
            "message/rfc822",
            "base64",
            "quoted-printable",
            "attachment; filename*=x''%ZZ",
            "=?utf-8?b?!!!?=",
            "=?x?q?=ZZ?=",
            "<a@b> <c@d",
            'a@b, <<>>, "q" <x@y>',
            "Mon, 99 Foo 2024 99:99:99 +9999",
            "multipart/report; report-type=delivery-status",
        ]
    ),
)
_BODY_LINES = st.one_of(
    st.text(max_size=60),
    st.sampled_from(["--b", "--b--", "", "Content-Type: text/plain", "=E9=", "AAAA===="]),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.tuples(_HEADER_NAMES, _HEADER_VALUES), min_size=1, max_size=12),
    st.lists(_BODY_LINES, max_size=20),
    st.sampled_from(["utf-8", "latin-1"]),
)
def test_generated_messages_never_raise_anything_else(
    headers: list[tuple[str, str]], body: list[str], encoding: str
) -> None:
    head = "\r\n".join(f"{name}: {value}" for name, value in headers)
    raw = (head + "\r\n\r\n" + "\r\n".join(body)).encode(encoding, "replace")
    try:
        mail = parse_inbound(raw)
    except UnparseableMail:
        return
    assert isinstance(mail.text, str)
    for att in mail.attachments:
        assert "/" not in att.filename and not att.filename.startswith(".")
