"""The SMTP sink's behaviours, exercised with aiosmtplib (what the gateway itself uses)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from email.message import EmailMessage
from email.utils import make_msgid

import aiosmtplib
import pytest

from tests.support.smtp_sink import SmtpSink


@pytest.fixture
async def sink() -> AsyncIterator[SmtpSink]:
    async with SmtpSink() as s:
        yield s


def _msg(subject: str = "hello") -> EmailMessage:
    m = EmailMessage()
    m["From"], m["To"], m["Subject"] = "a@example.test", "b@example.test", subject
    m["Message-ID"] = make_msgid(domain="example.test")
    m.set_content("body\n")
    return m


async def _send(
    sink: SmtpSink, msg: EmailMessage, username: str | None = None, password: str | None = None
) -> None:
    await aiosmtplib.send(
        msg,
        hostname="127.0.0.1",
        port=sink.port,
        start_tls=False,
        timeout=10,
        username=username,
        password=password,
    )


async def test_accepts_and_records(sink: SmtpSink) -> None:
    msg = _msg()
    await aiosmtplib.send(
        msg,
        sender="bounce@example.test",
        recipients=["b@example.test", "c@example.test"],
        hostname="127.0.0.1",
        port=sink.port,
        start_tls=False,
    )
    [got] = await sink.wait_for(1, timeout=5)
    assert got.mail_from == "bounce@example.test"
    assert got.rcpt_tos == ["b@example.test", "c@example.test"]
    assert got.message["Message-ID"] == msg["Message-ID"]
    assert got.message.get_content().rstrip() == "body"  # wire lines end in CRLF
    assert b"Subject: hello" in got.raw
    assert got.login is None
    assert sink.connections == 1
    assert sink.data_attempts == 1


async def test_wait_for_wakes_on_arrival_and_times_out(sink: SmtpSink) -> None:
    waiter = asyncio.create_task(sink.wait_for(2, timeout=5))
    await _send(sink, _msg("one"))
    await asyncio.sleep(0)
    assert not waiter.done()
    await _send(sink, _msg("two"))
    got = await waiter
    assert [m.message["Subject"] for m in got] == ["one", "two"]
    with pytest.raises(TimeoutError, match="2/3 messages"):
        await sink.wait_for(3, timeout=0.2)


async def test_fail_next_gives_4xx_then_accepts(sink: SmtpSink) -> None:
    sink.fail_next(2)
    for _ in range(2):
        with pytest.raises(aiosmtplib.SMTPDataError) as info:
            await _send(sink, _msg())
        assert info.value.code == 451
        assert "4.3.0 try later" in info.value.message
    await _send(sink, _msg())
    assert len(await sink.wait_for(1, timeout=5)) == 1
    assert sink.data_attempts == 3
    assert sink.connections == 3


async def test_fail_next_custom_reply(sink: SmtpSink) -> None:
    sink.fail_next(1, code=452, text="4.2.2 mailbox full")
    with pytest.raises(aiosmtplib.SMTPDataError) as info:
        await _send(sink, _msg())
    assert (info.value.code, info.value.message) == (452, "4.2.2 mailbox full")


async def test_reject_always_5xx(sink: SmtpSink) -> None:
    sink.reject_always()
    for _ in range(2):
        with pytest.raises(aiosmtplib.SMTPDataError) as info:
            await _send(sink, _msg())
        assert info.value.code == 550
        assert "5.1.1" in info.value.message
    sink.reject_always(at="rcpt")
    with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as refused:
        await _send(sink, _msg())
    assert refused.value.recipients[0].code == 550
    assert sink.messages == []
    sink.reset()
    await _send(sink, _msg())
    assert len(sink.messages) == 1


async def test_drop_after_data(sink: SmtpSink) -> None:
    sink.drop_after_data_next(1)
    with pytest.raises(aiosmtplib.SMTPServerDisconnected):
        await _send(sink, _msg())
    assert sink.data_attempts == 1
    assert sink.messages == []
    await _send(sink, _msg())  # only the next one is dropped
    assert len(await sink.wait_for(1, timeout=5)) == 1


async def test_delay_data(sink: SmtpSink) -> None:
    sink.delay_data(0.3)
    t0 = time.monotonic()
    await _send(sink, _msg())
    assert time.monotonic() - t0 >= 0.3
    sink.delay_data(0.5)
    with pytest.raises(aiosmtplib.SMTPTimeoutError):
        await aiosmtplib.send(
            _msg(), hostname="127.0.0.1", port=sink.port, start_tls=False, timeout=0.2
        )


async def test_connections_counted(sink: SmtpSink) -> None:
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=sink.port, start_tls=False)
    async with client:
        await client.send_message(_msg())
        await client.send_message(_msg())
    assert sink.connections == 1
    assert len(sink.messages) == 2


async def test_auth_any_credentials_when_unset(sink: SmtpSink) -> None:
    await _send(sink, _msg(), username="anyone", password="whatever")
    [got] = await sink.wait_for(1, timeout=5)
    assert got.login == "anyone"
    assert sink.logins == ["anyone"]


async def test_auth_with_credentials() -> None:
    async with SmtpSink(username="gw", password="pw", require_auth=True) as sink:
        with pytest.raises(aiosmtplib.SMTPAuthenticationError) as info:
            await _send(sink, _msg(), username="gw", password="wrong")
        assert info.value.code == 535
        with pytest.raises(aiosmtplib.SMTPSenderRefused) as refused:
            await _send(sink, _msg())  # no AUTH at all
        assert refused.value.code == 530
        await _send(sink, _msg(), username="gw", password="pw")
        [got] = await sink.wait_for(1, timeout=5)
        assert got.login == "gw"


async def test_stop_frees_port() -> None:
    sink = SmtpSink()
    await sink.start()
    port = sink.port
    await sink.stop()
    with pytest.raises(aiosmtplib.SMTPConnectError):
        await aiosmtplib.send(
            _msg(), hostname="127.0.0.1", port=port, start_tls=False, timeout=2
        )
