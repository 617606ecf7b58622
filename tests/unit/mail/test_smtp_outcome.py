"""Tests for gateway.mail.smtp_outcome."""

from __future__ import annotations

import aiosmtplib
import pytest

from gateway.mail.smtp_outcome import SmtpOutcome, classify, enhanced_status


def test_successful_reply_tuple() -> None:
    out = classify((250, "2.0.0 Ok: queued as 5B2C1"))
    assert out == SmtpOutcome("sent", 250, "2.0.0 Ok: queued as 5B2C1", "2.0.0")
    assert classify(aiosmtplib.SMTPResponse(250, "OK")).kind == "sent"
    assert not out.retryable


def test_aiosmtplib_send_result() -> None:
    refused = {"x@y.example": aiosmtplib.SMTPResponse(550, "5.1.1 unknown")}
    out = classify((refused, "Ok: queued"))
    assert out.kind == "sent" and out.code is None and out.message == "Ok: queued"
    assert out.refused[0].email == "x@y.example" and out.refused[0].code == 550
    assert classify(({}, "OK")).refused == ()


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        (421, "transient"),
        (450, "transient"),
        (452, "transient"),
        (550, "permanent"),
        (552, "permanent"),
        (554, "permanent"),
        (-1, "transient"),
        (250, "sent"),
    ],
)
def test_codes(code: int, kind: str) -> None:
    assert classify(code).kind == kind
    assert classify((code, "x")).kind == kind


def test_response_exceptions() -> None:
    out = classify(aiosmtplib.SMTPDataError(554, "5.7.1 Message rejected as spam"))
    assert (out.kind, out.code, out.enhanced) == ("permanent", 554, "5.7.1")
    out = classify(aiosmtplib.SMTPSenderRefused(451, "4.3.0 try later", "a@b"))
    assert (out.kind, out.enhanced) == ("transient", "4.3.0")
    quota = classify(aiosmtplib.SMTPDataError(552, "5.2.2 Mailbox full"))
    assert (quota.kind, quota.enhanced) == ("permanent", "5.2.2")
    multi = classify(aiosmtplib.SMTPDataError(550, "550-5.1.1 The email account\n550 5.1.1 ..."))
    assert multi.enhanced == "5.1.1"


def test_recipients_refused() -> None:
    one = aiosmtplib.SMTPRecipientRefused(550, "5.1.1 User unknown", "a@x.example")
    out = classify(aiosmtplib.SMTPRecipientsRefused([one]))
    assert (out.kind, out.code, out.enhanced) == ("permanent", 550, "5.1.1")
    assert out.refused[0].email == "a@x.example"
    later = aiosmtplib.SMTPRecipientRefused(450, "4.2.0 Greylisted", "b@x.example")
    out = classify(aiosmtplib.SMTPRecipientsRefused([one, later]))
    assert (out.kind, out.code) == ("transient", 450)
    assert len(out.refused) == 2
    assert classify(aiosmtplib.SMTPRecipientsRefused([])).kind == "transient"


def test_auth_failure_is_transient_but_flagged() -> None:
    out = classify(aiosmtplib.SMTPAuthenticationError(535, "5.7.8 Authentication failed"))
    assert out.kind == "transient" and out.auth_failure and out.code == 535
    assert out.enhanced == "5.7.8"
    assert not classify(aiosmtplib.SMTPDataError(535, "x")).auth_failure


@pytest.mark.parametrize(
    "exc",
    [
        aiosmtplib.SMTPServerDisconnected("Connection lost"),
        aiosmtplib.SMTPConnectError("refused"),
        aiosmtplib.SMTPConnectTimeoutError("timed out"),
        aiosmtplib.SMTPReadTimeoutError("timed out"),
        aiosmtplib.SMTPTimeoutError("timed out"),
        aiosmtplib.SMTPConnectResponseError(554, "no service"),
        aiosmtplib.SMTPException("odd"),
        ConnectionResetError("reset"),
        OSError("network unreachable"),
        TimeoutError(),
        RuntimeError("bug"),
    ],
)
def test_transient_exceptions(exc: BaseException) -> None:
    out = classify(exc)
    assert out.kind == "transient" and out.retryable
    assert out.message
    assert not out.auth_failure


def test_not_supported_is_permanent() -> None:
    out = classify(aiosmtplib.SMTPNotSupported("SMTPUTF8 not supported by server"))
    assert out.kind == "permanent" and out.code is None


def test_enhanced_status() -> None:
    assert enhanced_status("5.1.1 <x>: unknown") == "5.1.1"
    assert enhanced_status("250 2.0.0 OK") == "2.0.0"
    assert enhanced_status("Mailbox unavailable") is None
    assert enhanced_status("version 10.1.12 rocks") is None
