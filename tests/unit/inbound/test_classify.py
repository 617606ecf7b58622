"""The pure part of ingestion never raises, whatever the bytes."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.inbound.classify import _has_nul, classify, nul_free, synthetic_message_id
from gateway.mail.parse import ParsedAttachment

CORPUS: list[bytes] = [
    b"",
    b"\r\n\r\n",
    b"no headers at all, just text",
    b"\x00\x01\x02\xff\xfe",
    b"From: a@b.example\r\nSubject: =?utf-8?B?!!!broken?=\r\n\r\nbody",
    b"From: a@b.example\r\nContent-Type: text/plain; charset=x-unknown-charset\r\n\r\n\xe9t\xe9",
    b"From: a@b.example\r\nContent-Type: multipart/mixed\r\n\r\n--zz\r\n\r\nno boundary param\r\n--zz--",
    b"From: a@b.example\r\nContent-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\nContent-Type: "
    b"multipart/mixed; boundary=x\r\n\r\n--x\r\n",
    b"From: a@b.example\r\nX-Huge: " + b"A" * 200_000 + b"\r\n\r\nbody",
    b"From: a@b.example\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!not base64###",
    b"From: <>\r\nTo: ,,,\r\nMessage-ID: <<<>>>\r\nIn-Reply-To: <\r\n\r\nx",
    b"From: MAILER-DAEMON@x.example\r\nContent-Type: multipart/report; report-type=delivery-status;"
    b" boundary=b\r\n\r\n--b\r\nContent-Type: message/delivery-status\r\n\r\nStatus: garbage\r\n--b--",
    b"Subject: \xff\xfe\r\nFrom: \xe9@\xe9.example\r\n\r\n\xff",
]


def test_corpus_never_raises() -> None:
    for raw in CORPUS:
        c = classify(raw)
        assert c.kind in {"mail", "bounce", "unparseable"}
        assert c.rfc_message_id.startswith("<") and c.rfc_message_id.endswith(">")


def test_empty_and_headerless_are_unparseable() -> None:
    assert classify(b"").kind == "unparseable"
    assert classify(b"\x00\x01\x02\xff\xfe").kind == "unparseable"


def test_synthetic_id_is_stable() -> None:
    raw = b"Subject: x\r\n\r\nbody"
    assert classify(raw).rfc_message_id == synthetic_message_id(raw) == synthetic_message_id(bytes(raw))
    assert synthetic_message_id(raw) != synthetic_message_id(raw + b"!")


def test_reply_and_auto_reply() -> None:
    raw = (b"From: Bob <bob@Example.TEST>\r\nTo: g@example.test\r\nSubject: Automatic reply: hi\r\n"
           b"Message-ID: <m1@x>\r\nIn-Reply-To: <orig@x>\r\n\r\n"
           b"I am away.\r\n\r\nOn Mon, A wrote:\r\n> hi\r\n")
    c = classify(raw)
    assert c.kind == "mail" and c.is_auto_reply and c.rfc_message_id == "<m1@x>"
    assert c.parsed is not None and c.parsed.from_addr == "bob@example.test"
    assert c.reply_text == "I am away."


_header = st.tuples(
    st.sampled_from(["From", "To", "Subject", "Message-ID", "In-Reply-To", "References", "Content-Type",
                     "Content-Transfer-Encoding", "Auto-Submitted", "X-Other"]),
    st.binary(max_size=80).filter(lambda b: b"\n" not in b and b"\r" not in b),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(headers=st.lists(_header, max_size=8), body=st.binary(max_size=400))
def test_generated_messages_never_raise(headers: list[tuple[str, bytes]], body: bytes) -> None:
    raw = b"".join(name.encode() + b": " + value + b"\r\n" for name, value in headers) + b"\r\n" + body
    c = classify(raw)
    assert c.kind in {"mail", "bounce", "unparseable"}
    assert not _has_nul(c)  # everything classified can be stored in PostgreSQL text


@settings(max_examples=200, deadline=None)
@given(raw=st.binary(max_size=600))
def test_arbitrary_bytes_never_raise(raw: bytes) -> None:
    assert classify(raw).kind in {"mail", "bounce", "unparseable"}


def test_nul_characters_are_dropped_from_everything_stored() -> None:
    raw = (b"From: Bob <bob@lead.example>\r\nTo: alice@acme.example\r\n"
           b"Subject: =?utf-8?q?a=00b?=\r\nMessage-ID: <n@lead.example>\r\n"
           b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n"
           b"\r\nyes=00 please\x00\r\n")
    c = classify(raw)
    assert c.kind == "mail" and c.parsed is not None
    stored = (c.parsed.subject, c.parsed.text.strip(), c.reply_text.strip())
    assert stored == ("ab", "yes please", "yes please")
    assert not _has_nul(c)


def test_nul_free_returns_clean_values_unchanged() -> None:
    c = classify(b"From: bob@lead.example\r\nSubject: hi\r\n\r\nplain\r\n")
    assert c.parsed is not None and nul_free(c.parsed) is c.parsed


def test_has_nul_searches_every_text_a_classified_message_holds() -> None:
    clean = classify(b"From: bob@lead.example\r\nSubject: hi\r\n\r\nplain\r\n")
    assert clean.parsed is not None and not _has_nul(clean)
    attachment = ParsedAttachment("a.txt", "text/plain", b"\x00 bytes are data, not text")
    assert not _has_nul(attachment)
    parsed = clean.parsed
    variants = [
        replace(parsed, text="a\x00"),
        replace(parsed, to=["x@y", "z\x00@y"]),
        replace(parsed, headers={"subject": ["ok"], "x-bad": ["\x00"]}),
        replace(parsed, headers={"x-\x00": ["ok"]}),
        replace(parsed, attachments=[attachment, replace(attachment, filename="b\x00.txt")]),
        replace(parsed, from_name="Bo\x00b"),
    ]
    for variant in variants:
        assert _has_nul(variant) and _has_nul(replace(clean, parsed=variant))
        assert not _has_nul(nul_free(variant))
