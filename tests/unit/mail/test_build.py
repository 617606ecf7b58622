"""Tests for gateway.mail.build."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from email import message_from_bytes, policy
from email.message import EmailMessage
from email.utils import parseaddr

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.mail.build import (
    FORBIDDEN_HEADERS,
    AttachmentPart,
    OutgoingMessage,
    build_message,
    envelope_recipients,
    parse_address,
    serialize,
    validate_custom_headers,
)


def _spec(**overrides: object) -> OutgoingMessage:
    base: dict[str, object] = {
        "from_email": "alice.chen@tryacme.example",
        "from_name": "Alice Chen",
        "to": ["morgan@northwind.example"],
        "subject": "Quick question",
        "text": "Hi Morgan,\n\nDo you have 15 minutes?",
        "message_id": "<tok1@tryacme.example>",
        "date": datetime(2024, 6, 3, 15, 0, tzinfo=UTC),
    }
    base.update(overrides)
    return OutgoingMessage(**base)  # type: ignore[arg-type]


def _roundtrip(spec: OutgoingMessage) -> tuple[bytes, EmailMessage]:
    wire = serialize(build_message(spec))
    parsed = message_from_bytes(wire, policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    return wire, parsed


def test_basic_alternative_message() -> None:
    wire, msg = _roundtrip(_spec())
    assert b"\r\n" in wire and b"\n" not in wire.replace(b"\r\n", b"")
    assert msg.get_content_type() == "multipart/alternative"
    assert msg["From"] == "Alice Chen <alice.chen@tryacme.example>"
    assert msg["To"] == "morgan@northwind.example"
    assert msg["Message-ID"] == "<tok1@tryacme.example>"
    assert msg["Date"] == "Mon, 03 Jun 2024 15:00:00 +0000"
    assert msg["MIME-Version"] == "1.0"
    assert wire.count(b"MIME-Version") == 1
    plain = msg.get_body(("plain",))
    html = msg.get_body(("html",))
    assert plain is not None and html is not None
    assert plain.get_content().replace("\r\n", "\n").strip() == ("Hi Morgan,\n\nDo you have 15 minutes?")
    assert "<p>Hi Morgan,</p>" in html.get_content()
    assert "In-Reply-To" not in msg and "References" not in msg


def test_html_only_derives_text() -> None:
    _, msg = _roundtrip(_spec(text=None, html="<p>Hello <b>there</b></p>"))
    plain = msg.get_body(("plain",))
    assert plain is not None and plain.get_content().strip() == "Hello there"


def test_no_body_is_an_error() -> None:
    with pytest.raises(ValueError):
        build_message(_spec(text=None, html=None))


def test_non_ascii_display_name_and_subject_are_encoded() -> None:
    wire, msg = _roundtrip(_spec(from_name="Zoë Müller, CEO", subject="Grüße aus Köln"))
    head = wire.split(b"\r\n\r\n", 1)[0]
    assert head.isascii()
    assert msg["From"].addresses[0].display_name == "Zoë Müller, CEO"
    assert msg["From"].addresses[0].addr_spec == "alice.chen@tryacme.example"
    assert msg["Subject"] == "Grüße aus Köln"


def test_subject_cannot_inject_headers() -> None:
    _, msg = _roundtrip(_spec(subject="Hi\r\nBcc: evil@example.com"))
    assert "Bcc" not in msg
    assert msg["Subject"] == "Hi Bcc: evil@example.com"


def test_threading_headers_fold_without_encoded_words() -> None:
    refs = [f"<{'r' * 60}{i}@mail.example.com>" for i in range(5)]
    wire, msg = _roundtrip(_spec(in_reply_to=refs[-1], references=refs))
    assert b"=?" not in wire
    head = wire.split(b"\r\n\r\n", 1)[0].decode()
    assert all(len(line) <= 998 for line in head.split("\r\n"))
    assert msg["In-Reply-To"] == refs[-1]
    assert msg["References"].split() == refs


def test_cc_and_bcc() -> None:
    spec = _spec(cc=["Ops <ops@northwind.example>"], bcc=["audit@tryacme.example"])
    wire, msg = _roundtrip(spec)
    assert msg["Cc"] == "Ops <ops@northwind.example>"
    assert b"audit@tryacme.example" not in wire
    assert "Bcc" not in msg


def test_envelope_recipients_dedupe_case_insensitively() -> None:
    spec = _spec(
        to=["Morgan <morgan@northwind.example>"],
        cc=["MORGAN@northwind.example", "ops@northwind.example"],
        bcc=["ops@NorthWind.example", "audit@tryacme.example"],
    )
    assert envelope_recipients(spec) == [
        "morgan@northwind.example",
        "ops@northwind.example",
        "audit@tryacme.example",
    ]


def test_unsubscribe_auto_submitted_and_custom_headers() -> None:
    url = "https://gw.example/v1/unsubscribe/" + "t" * 120
    spec = _spec(
        list_unsubscribe=url,
        list_unsubscribe_post=True,
        auto_submitted="auto-generated",
        headers={"X-Campaign": "spring", "X-Note": "Grüße", "List-Unsubscribe": "<mailto:x@y>"},
    )
    wire, msg = _roundtrip(spec)
    assert msg["List-Unsubscribe"] == f"<{url}>"
    assert msg.get_all("List-Unsubscribe") == [f"<{url}>"]  # the gateway's value wins
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert msg["Auto-Submitted"] == "auto-generated"
    assert msg["X-Campaign"] == "spring"
    assert msg["X-Note"] == "Grüße"
    assert b"=?" not in wire.split(b"X-Note")[0]  # only the non-ASCII value is encoded


def test_custom_list_unsubscribe_kept_when_gateway_sets_none() -> None:
    _, msg = _roundtrip(_spec(headers={"List-Unsubscribe": "<mailto:u@northwind.example>"}))
    assert msg["List-Unsubscribe"] == "<mailto:u@northwind.example>"
    assert "List-Unsubscribe-Post" not in msg


def test_attachments_make_mixed() -> None:
    pdf = b"%PDF-1.4\n" + bytes(range(256))
    spec = _spec(
        attachments=[
            AttachmentPart("Angebot é.pdf", "application/pdf", pdf),
            AttachmentPart("notes.txt", "text/plain; charset=utf-8", "héllo".encode()),
            AttachmentPart("mail.eml", "message/rfc822", b"Subject: x\r\n\r\nbody"),
            AttachmentPart("", "nonsense", b"x"),
        ]
    )
    _, msg = _roundtrip(spec)
    assert msg.get_content_type() == "multipart/mixed"
    parts = list(msg.iter_parts())
    assert parts[0].get_content_type() == "multipart/alternative"
    atts = list(msg.iter_attachments())
    assert [a.get_filename() for a in atts] == ["Angebot é.pdf", "notes.txt", "mail.eml", "attachment"]
    assert atts[0].get_content() == pdf
    assert atts[1].get_content_type() == "text/plain"
    assert atts[2].get_content_type() == "application/octet-stream"
    assert atts[3].get_content_type() == "application/octet-stream"


def test_date_defaults_to_now_and_naive_is_utc() -> None:
    _, msg = _roundtrip(_spec(date=None))
    sent = msg["Date"].datetime
    assert abs(sent - datetime.now(UTC)) < timedelta(minutes=1)
    _, msg = _roundtrip(_spec(date=datetime(2024, 1, 2, 3, 4, 5)))
    assert msg["Date"] == "Tue, 02 Jan 2024 03:04:05 +0000"
    tz = timezone(timedelta(hours=2))
    _, msg = _roundtrip(_spec(date=datetime(2024, 1, 2, 3, 4, 5, tzinfo=tz)))
    assert msg["Date"].endswith("+0200")


def test_long_html_lines_are_encoded_safely() -> None:
    wire, msg = _roundtrip(_spec(text="x" * 2000, html="<p>" + "é" * 2000 + "</p>"))
    assert all(len(line) <= 998 for line in wire.split(b"\r\n"))
    html = msg.get_body(("html",))
    assert html is not None and "é" * 2000 in html.get_content()


@pytest.mark.parametrize(
    "address", ["not an address", "a b@c.example", "@x.example", "a@", "a@b@c", "é@x.example", "a@x\x00"]
)
def test_invalid_address_rejected_as_value_error(address: str) -> None:
    with pytest.raises(ValueError):
        build_message(_spec(to=[address]))


def test_idn_domains_use_a_labels() -> None:
    spec = _spec(from_email="alice@bücher.example", to=["bob@münchen.example"])
    _, msg = _roundtrip(spec)
    assert msg["From"].addresses[0].domain == "xn--bcher-kva.example"
    assert envelope_recipients(spec) == ["bob@xn--mnchen-3ya.example"]


def test_invalid_address_rejected() -> None:
    with pytest.raises(ValueError):
        build_message(_spec(to=[]))


def test_build_rejects_invalid_custom_headers() -> None:
    with pytest.raises(ValueError, match=r"headers\.Subject"):
        build_message(_spec(headers={"Subject": "x"}))


def test_forbidden_headers_set() -> None:
    assert "message-id" in FORBIDDEN_HEADERS
    assert all(h == h.lower() for h in FORBIDDEN_HEADERS)


def test_validate_custom_headers() -> None:
    assert validate_custom_headers({"X-Ok": "fine", "List-Unsubscribe": "<https://u>"}) == []
    problems = dict(
        validate_custom_headers(
            {
                "From": "x",
                "content-type": "text/plain",
                "Content-Disposition": "inline",
                "Bad Name": "x",
                "X:Colon": "x",
                "Mime-Version": "1.0",
                "X-Inject": "a\r\nBcc: evil@example.com",
                "X-Lf": "a\nb",
                "X-Long": "a" * 999,
                "": "empty name",
                "X-Ünicode": "x",
            }
        )
    )
    assert set(problems) == {
        "headers.From",
        "headers.content-type",
        "headers.Content-Disposition",
        "headers.Bad Name",
        "headers.X:Colon",
        "headers.Mime-Version",
        "headers.X-Inject",
        "headers.X-Lf",
        "headers.X-Long",
        "headers.",
        "headers.X-Ünicode",
    }
    assert re.search("CR or LF", problems["headers.X-Inject"])
    assert validate_custom_headers({"X-Max": "a" * 998}) == []


_ATOM = st.text("abcXYZ019!#$%&'*+/=?^_`{|}~-", min_size=1, max_size=6)
_LABEL = st.text("abcXYZ019-", min_size=1, max_size=6)


@settings(max_examples=300, deadline=None)
@given(st.lists(_ATOM, min_size=1, max_size=3), st.lists(_LABEL, min_size=1, max_size=3))
def test_plain_addresses_parse_as_parseaddr_does(local: list[str], domain: list[str]) -> None:
    raw = f"{'.'.join(local)}@{'.'.join(domain)}"
    assert parse_address(raw) == parseaddr(raw) == ("", raw)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40) | st.from_regex(r"[a-z.\"<> @-]{0,20}", fullmatch=True))
def test_any_address_parses_as_parseaddr_does(raw: str) -> None:
    assert parse_address(raw) == parseaddr(raw)
