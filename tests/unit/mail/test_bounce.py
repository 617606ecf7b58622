"""Tests for gateway.mail.bounce."""

from __future__ import annotations

from email import message_from_bytes, policy

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.mail.bounce import BounceRecipient, classify_status, parse_bounce
from tests.unit.mail import samples


def test_postfix_dsn() -> None:
    bounce = parse_bounce(samples.POSTFIX_DSN)
    assert bounce is not None
    assert bounce.original_message_id == "<tok3@acme.example>"
    assert bounce.recipients == [
        BounceRecipient(
            email="nobody@northwind.example",
            status="5.1.1",
            action="failed",
            diagnostic="550 5.1.1 <nobody@northwind.example>: Recipient address rejected: User unknown",
            bounce_type="hard",
        ),
        BounceRecipient(
            email="slow@fabrikam.example",
            status="4.4.1",
            action="delayed",
            diagnostic="connect to mx.fabrikam.example[192.0.2.9]:25: Connection timed out",
            bounce_type="soft",
        ),
    ]
    assert bounce.bounce_type == "hard"


def test_dsn_from_parsed_message_object() -> None:
    msg = message_from_bytes(samples.POSTFIX_DSN, policy=policy.default)
    bounce = parse_bounce(msg)
    assert bounce is not None and len(bounce.recipients) == 2


def test_exim_bounce_via_flufl() -> None:
    bounce = parse_bounce(samples.EXIM_BOUNCE)
    assert bounce is not None
    assert [(r.email, r.bounce_type, r.action) for r in bounce.recipients] == [
        ("ghost@contoso.example", "hard", "failed")
    ]
    assert bounce.original_message_id == "<tok4@acme.example>"


def test_dsn_with_attached_message() -> None:
    raw = samples.crlf(
        """\
From: postmaster@mx.example
Subject: Delivery Status Notification (Failure)
Message-ID: <dsn@mx.example>
Content-Type: multipart/report; report-type=delivery-status; boundary="b"

--b
Content-Type: text/plain

failed
--b
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example

Final-Recipient: rfc822; <full@quota.example>
Action: failed
Diagnostic-Code: smtp; 552 mailbox full

--b
Content-Type: message/rfc822

From: alice@acme.example
Message-ID: <tok5@acme.example>
Subject: hi

hi
--b--
"""
    )
    bounce = parse_bounce(raw)
    assert bounce is not None
    assert bounce.original_message_id == "<tok5@acme.example>"
    rcpt = bounce.recipients[0]
    assert (rcpt.email, rcpt.status, rcpt.bounce_type) == ("full@quota.example", None, "hard")
    assert rcpt.diagnostic == "552 mailbox full"


def test_dsn_without_recipient_fields_uses_flufl_or_partial() -> None:
    raw = samples.crlf(
        """\
From: MAILER-DAEMON@mx.example
Subject: Undelivered Mail Returned to Sender
Content-Type: multipart/report; report-type=delivery-status; boundary="b"

--b
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example

--b
Content-Type: text/rfc822-headers

Message-ID: <tok6@acme.example>

--b--
"""
    )
    bounce = parse_bounce(raw)
    assert bounce is not None
    assert bounce.recipients == []
    assert bounce.original_message_id == "<tok6@acme.example>"
    assert bounce.bounce_type == "soft"  # unknown recipients never cause suppression


def test_success_dsn_is_not_a_bounce() -> None:
    raw = samples.POSTFIX_DSN.replace(b"Action: failed", b"Action: delivered").replace(
        b"Action: delayed", b"Action: relayed"
    )
    assert parse_bounce(raw) is None


@pytest.mark.parametrize(
    "raw",
    [samples.GMAIL_REPLY, samples.OUTLOOK_REPLY, samples.EXCHANGE_OOF, samples.LATIN1_BOGUS],
)
def test_ordinary_mail_is_not_a_bounce(raw: bytes) -> None:
    assert parse_bounce(raw) is None


def test_human_mail_quoting_a_failure_is_not_a_bounce() -> None:
    raw = samples.crlf(
        """\
From: bob@northwind.example
Subject: Re: your mail
X-Failed-Recipients: someone@x.example

I got: 550 5.1.1 User unknown for someone@x.example
"""
    )
    assert parse_bounce(raw) is None


@pytest.mark.parametrize(
    ("status", "action", "diagnostic", "expected"),
    [
        ("5.1.1", "failed", None, "hard"),
        ("4.4.7", "failed", "smtp; 550 x", "soft"),  # the status code decides first
        (None, "failed", "550 5.1.1 unknown", "hard"),
        (None, "failed", "451 try later", "soft"),
        (None, "failed", None, "hard"),
        (None, "delayed", None, "soft"),
        (None, None, None, "soft"),
    ],
)
def test_classify_status(
    status: str | None, action: str | None, diagnostic: str | None, expected: str
) -> None:
    assert classify_status(status, action, diagnostic) == expected


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=1500))
def test_never_raises_on_garbage(raw: bytes) -> None:
    parse_bounce(b"Content-Type: multipart/report; boundary=b\r\n\r\n--b\r\n" + raw)
    parse_bounce(raw)
