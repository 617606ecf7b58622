"""The loopback mail lab works end to end: SMTP (Postfix) -> LMTP -> IMAP (Dovecot)."""

from __future__ import annotations

from email.message import EmailMessage
from email.utils import make_msgid

import aiosmtplib
import pytest

from tests.support.mailserver import (
    SUBMISSION_PORT,
    ensure_lab,
    imap_clear,
    imap_fetch_by_message_id,
    lab_up,
    smtp_send,
)

pytestmark = pytest.mark.integration

ALICE, BOB = "alice@example.test", "bob@example.test"


@pytest.fixture(scope="module", autouse=True)
def mail_lab() -> None:
    ensure_lab()


def _msg(frm: str, to: str, subject: str) -> EmailMessage:
    m = EmailMessage()
    m["From"], m["To"], m["Subject"] = frm, to, subject
    m["Message-ID"] = make_msgid(domain="example.test")
    m.set_content(f"{subject}\n")
    return m


def test_lab_is_up() -> None:
    assert lab_up()


async def test_round_trip_alice_to_bob() -> None:
    await imap_clear(BOB)
    msg = _msg(ALICE, BOB, "lab round trip")
    await smtp_send(ALICE, BOB, msg)
    got = await imap_fetch_by_message_id(BOB, msg["Message-ID"], timeout=20)
    assert got["Subject"] == "lab round trip"
    assert got["From"] == ALICE
    assert got.get_content().rstrip() == "lab round trip"  # CRLF as stored


async def test_raw_bytes_via_submission_with_auth() -> None:
    msg = _msg(BOB, ALICE, "reply via submission")
    await smtp_send(BOB, [ALICE], msg.as_bytes(), port=SUBMISSION_PORT, username=BOB)
    got = await imap_fetch_by_message_id(ALICE, msg["Message-ID"])
    assert got["Subject"] == "reply via submission"


async def test_unknown_local_user_refused() -> None:
    with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as info:
        await smtp_send(ALICE, "nobody@example.test", _msg(ALICE, "nobody@example.test", "x"))
    assert info.value.recipients[0].code == 550


async def test_fetch_missing_message_times_out() -> None:
    with pytest.raises(TimeoutError, match="not-there"):
        await imap_fetch_by_message_id(BOB, "<not-there@example.test>", timeout=0.5)


async def test_imap_clear_empties_inbox() -> None:
    msg = _msg(ALICE, "carol@example.test", "to be cleared")
    await smtp_send(ALICE, "carol@example.test", msg)
    await imap_fetch_by_message_id("carol@example.test", msg["Message-ID"])
    await imap_clear("carol@example.test")
    with pytest.raises(TimeoutError):
        await imap_fetch_by_message_id("carol@example.test", msg["Message-ID"], timeout=0.3)
