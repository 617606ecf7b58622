"""`message_from_raw` is `email.message_from_bytes` with a shortcut for single-part mail: the
message it builds must be the very same, whatever the bytes."""

from __future__ import annotations

from email import message_from_bytes, policy
from email.message import Message
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.mail.parse import message_from_raw
from tests.unit.inbound.test_classify import CORPUS


def _state(msg: Message) -> dict[str, Any]:
    out = {k: v for k, v in vars(msg).items() if k not in {"defects", "_payload", "policy"}}
    out["defects"] = [type(d) for d in msg.defects]
    payload = msg._payload  # type: ignore[attr-defined]
    out["_payload"] = [_state(p) for p in payload] if isinstance(payload, list) else payload
    out["type"] = type(msg)
    return out


def _same(raw: bytes) -> None:
    for p in (policy.default, policy.compat32):
        assert _state(message_from_raw(raw, p)) == _state(message_from_bytes(raw, policy=p))


def test_corpus() -> None:
    for raw in CORPUS:
        _same(raw)
    _same(b"From: a@b.example\r\nSubject: x\r\n\r\nline 1\r\nline 2\r\n")
    _same(b"From nobody Mon Jan  1 00:00:00 2024\nFrom: a@b\n\nbody\n\n\nmore")
    _same(b"From: a@b\nContent-Type: message/rfc822\n\nFrom: c@d\n\ninner")
    _same(b"From: a@b\nContent-Type: multipart/mixed; boundary=x\n\n--x\n\nA\n--x--\n")
    _same(b"From: a@b\nnot a header\n\nbody")
    _same(b"From: a@b\n\r\nbody\r\n\r\nmore")
    _same(b"Subject: \xff\xfe\r\nFrom: \xe9@x\r\n\r\n\xff\xe9 body \r")


_HEADERS = st.sampled_from([
    b"From: a@b.example", b"To: c@d.example", b"Subject: =?utf-8?q?caf=C3=A9?=", b"Subject: \xe9t\xe9",
    b"Content-Type: text/plain; charset=utf-8", b"Content-Type: text/html", b"Content-Type: multipart/mixed",
    b"Content-Type: multipart/alternative; boundary=b", b"Content-Type: message/rfc822",
    b"Content-Type: message/delivery-status", b"Content-Type: ; garbage", b"Content-Type: text",
    b"Content-Transfer-Encoding: base64", b" folded continuation", b"\tfolded", b"no colon here",
    b"From nobody", b"X-Empty:", b":", b"From: <>",
])
_NEWLINES = st.sampled_from([b"\r\n", b"\n", b"\r"])
_BODY = st.lists(
    st.sampled_from([b"", b"--b", b"--b--", b"text", b"Content-Type: text/plain", b"\xff", b" "]), max_size=8)


@settings(max_examples=500, deadline=None)
@given(st.lists(st.tuples(_HEADERS, _NEWLINES), max_size=8), _NEWLINES, _BODY, _NEWLINES,
       st.binary(max_size=40))
def test_generated(headers: list[tuple[bytes, bytes]], blank: bytes, body: list[bytes], nl: bytes,
                   tail: bytes) -> None:
    raw = b"".join(h + n for h, n in headers) + blank + nl.join(body) + tail
    _same(raw)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes(raw: bytes) -> None:
    _same(raw)
