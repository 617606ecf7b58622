"""`parse_inbound` reads the common Content-Type and address shapes straight from the raw
headers (`shortcut=True`, the default); the result must be exactly what the general path
through the `email` package's accessors gives (`shortcut=False`), whatever the bytes."""

from __future__ import annotations

from email import policy
from email.message import EmailMessage

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.inbound.classify import parse_message as parse_cached
from gateway.mail.parse import (
    ParsedMail,
    UnparseableMail,
    _addresses,
    _date,
    _simple_addresses,
    _simple_text,
    message_from_raw,
    parse_inbound,
    parse_message,
)
from tests.unit.inbound.test_classify import CORPUS
from tests.unit.mail import samples


def _both(raw: bytes) -> tuple[ParsedMail | str, ParsedMail | str]:
    out: list[ParsedMail | str] = []
    for shortcut in (True, False):
        try:
            out.append(parse_inbound(raw, shortcut=shortcut))
        except UnparseableMail as exc:
            out.append(f"unparseable: {exc}")
    return out[0], out[1]


def _same(raw: bytes) -> None:
    fast, general = _both(raw)
    assert fast == general
    try:  # the classifier's caching policy must not change anything either
        msg = parse_cached(raw)
    except UnparseableMail:
        return
    assert parse_inbound(raw, msg) == parse_inbound(raw, msg, shortcut=False) == general


def test_corpus() -> None:
    for raw in CORPUS:
        _same(raw)
    for name, value in vars(samples).items():  # real mailers' replies, bounces, auto-replies
        if name.isupper() and isinstance(value, bytes):
            _same(value)


@pytest.mark.parametrize("content_type", [
    "text/plain", "TEXT/Plain", "text/plain; charset=utf-8", 'text/plain; charset="UTF-8"',
    "text/plain; Charset=iso-8859-1; format=flowed; delsp=yes", "text/plain;charset=bogus",
    "text/plain; charset=base64", "text/plain; charset=us-ascii", "text/html; charset=windows-1252",
    "text/plain; charset=utf-8; charset=latin-1", "text/plain; format=flowed",
    "text/plain;\r\n charset=utf-8",
    'text/plain; name="a.txt"', "text/plain; name=a.txt", "text/plain; NAME=a.txt", 'text/plain; charset=""',
    "text/plain ; charset = utf-8 ", "text/plain; charset*=utf-8''x", "text/plain; charset=utf-8;",
    "text/calendar", "text", "text/plain/x", "", "  ", "text/plain; charset=\"utf 8\"",
])
@pytest.mark.parametrize("extra", [
    "", "Content-Disposition: attachment\r\n", "Content-Disposition: inline\r\n",
    "Content-Transfer-Encoding: base64\r\n", "Content-Transfer-Encoding: quoted-printable\r\n",
    "Content-Type: text/html\r\n",
])
def test_content_types(content_type: str, extra: str) -> None:
    body = "caf\u00e9 =C3=A9 Y2Fmw6k= \u20ac\r\nline 2\r\n".encode()
    raw = (f"From: a@b.example\r\nContent-Type: {content_type}\r\n{extra}\r\n").encode() + body
    _same(raw)
    _same(body.join([b"From: a@b.example\r\n", b"\r\n"]))  # no Content-Type at all


def test_shortcut_is_taken_for_plain_shapes() -> None:
    msg = parse_message(b"From: a@b\r\nContent-Type: text/plain; charset=\"UTF-8\"; format=flowed\r\n\r\nx")
    assert _simple_text(msg) == ("text/plain", "UTF-8")
    assert _simple_addresses(["Ann Lee <ann@Example.COM>", "bob@x.example, <c@d>"]) == [
        ("Ann Lee", "ann@Example.COM"), ("", "bob@x.example"), ("", "c@d")]
    assert _simple_addresses(['"Lee, Ann" <ann@example.com>']) is None
    assert _addresses(["Ann <ann@Example.COM>"]) == [("Ann", "ann@example.com")]


@pytest.mark.parametrize("value", [
    "a@b", "A@B.EXAMPLE", "Ann Lee <ann@example.com>", "Ann  Lee <a@b>", "<a@b>", " a@b , c@d ",
    "a@b,", ",a@b", "a@b,,c@d", "Ann Lee<a@b>", "a.b@c", "a..b@c", ".a@b", "a@b.", "a@b..c", "a@-b",
    "a+tag@b", "o'brien@x.example", "a b@c", "a@b c", "\"Lee, Ann\" <a@b>", "Ann (x) <a@b>",
    "undisclosed-recipients:;", "a@[127.0.0.1]", "=?utf-8?q?Ann?= <a@b>", "Ann\u00a0Lee <a@b>",
    "\u00e9@b", "a@b\r\n c@d", "a@b,\r\n c@d", "", " ", "<>", "Ann <>", "Ann <a@b> x", "a@b <c@d>",
    "a@b\tc@d", "a\x0c@b",
])
def test_addresses(value: str) -> None:
    raw = f"From: {value}\r\nTo: {value}\r\nCc: x@y, {value}\r\nReply-To: {value}\r\n\r\nbody".encode()
    _same(raw)


_HEADERS = st.sampled_from([
    "From: a@b.example", "From: Ann Lee <Ann@B.Example>", "From: <a@b>", 'From: "A, B" <a@b>',
    "To: c@d.example, e@f", "To: x", "Cc: ,", "Reply-To: Ann <a@b>", "From: a@b\r\n\tc@d",
    "Subject: =?utf-8?q?caf=C3=A9?=", "Content-Type: text/plain; charset=utf-8",
    "Content-Type: text/html", "Content-Type: TEXT/PLAIN; charset=\"iso-8859-1\"; format=flowed",
    "Content-Type: text/plain; name=x.txt", "Content-Type: text/plain;\r\n charset=koi8-r",
    "Content-Type: multipart/mixed; boundary=b", "Content-Type: multipart/alternative; boundary=b",
    "Content-Type: message/rfc822", "Content-Type: ; garbage", "Content-Type: text",
    "Content-Disposition: attachment", "Content-Disposition: inline; filename=a.txt",
    "Content-Transfer-Encoding: base64", "Content-Transfer-Encoding: quoted-printable",
    "Content-Transfer-Encoding: 8bit", "Content-ID: <x@y>", " folded continuation", "no colon here",
])
_TEXTS = st.sampled_from(["hello", "caf\u00e9", "=C3=A9", "Y2Fmw6k=", "", "\u20ac\u00ff"])
_PARTS = st.lists(st.tuples(st.lists(_HEADERS, max_size=4), _TEXTS), max_size=3)


@settings(max_examples=400, deadline=None)
@given(st.lists(_HEADERS, max_size=6), st.sampled_from(["\r\n", "\n"]), _PARTS, st.binary(max_size=30))
def test_generated(headers: list[str], nl: str, parts: list[tuple[list[str], str]], tail: bytes) -> None:
    body = "".join(f"--b{nl}{nl.join(h)}{nl}{nl}{text}{nl}" for h, text in parts)
    raw = (nl.join(headers) + nl + nl + body + (f"--b--{nl}" if parts else "")).encode() + tail
    _same(raw)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("aAz@.<>, \"';=()\t-_\u00e9/")), max_size=40),
       st.text(alphabet=st.sampled_from(list("aA@.<>, \"';=:\t-_*/")), max_size=40))
def test_generated_values(address: str, content_type: str) -> None:
    _same(f"From: {address}\r\nTo: {address}\r\nContent-Type: text/{content_type}\r\n\r\nx".encode())
    _same(f"From: a@b\r\nContent-Type: text/plain; {content_type}\r\n\r\nx".encode())


def test_the_same_message_object_serves_both_policies() -> None:
    raw = b"From: Ann <a@b>\r\nContent-Type: text/plain; charset=latin-1\r\n\r\ncaf\xe9"
    msg = message_from_raw(raw, policy.default)
    assert isinstance(msg, EmailMessage)
    assert parse_inbound(raw, msg).text == parse_inbound(raw, msg, shortcut=False).text == "caf\u00e9"


_DATE_PARTS = st.tuples(
    st.sampled_from(["", "Mon, ", "Sun, ", "mon, ", "Xyz, ", "Tue,"]),
    st.sampled_from(["1", "09", "31", "30", "0", "123"]),
    st.sampled_from(["Jan", "Feb", "Dec", "jan", "Foo"]),
    st.sampled_from(["2026", "1999", "0050", "50", "99999"]),
    st.sampled_from(["10:00:00", "23:59:59", "24:00:00", "00:00:60", "7:5:3", "10:00"]),
    st.sampled_from(["+0000", "-0000", "-0500", "+0530", "+0099", "+9999", "GMT", "EST", ""]),
    st.sampled_from([" ", "  ", "\t", "\r\n "]),
)


@settings(max_examples=600, deadline=None)
@given(_DATE_PARTS)
def test_date_shortcut_matches_parsedate(parts: tuple[str, ...]) -> None:
    day_name, day, month, year, clock, zone, gap = parts
    value = f"{day_name}{day}{gap}{month} {year} {clock}{gap}{zone}"
    fast, slow = _date(value), _date(value, shortcut=False)
    assert fast == slow
    assert (fast.utcoffset() if fast else None) == (slow.utcoffset() if slow else None)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40))
def test_date_shortcut_on_arbitrary_text(value: str) -> None:
    assert _date(value) == _date(value, shortcut=False)
