"""The per-mailbox SMTP pool against an aiosmtpd sink on loopback: reuse, bounds, phases."""

from __future__ import annotations

import asyncio

import pytest

from gateway.delivery.smtp import Account, SmtpFailure, SmtpPools
from tests.support.smtp_sink import SmtpSink

DATA = b"From: a@example.test\r\nTo: b@example.test\r\nSubject: x\r\n\r\nbody\r\n"


async def test_reuses_a_bounded_number_of_connections() -> None:
    async with SmtpSink() as sink:
        pools = SmtpPools(size=2, timeout=10)
        pool = pools.get("mbx_1", Account("127.0.0.1", sink.port, "none"))
        results = await asyncio.gather(*(pool.send("a@example.test", ["b@example.test"], DATA)
                                         for _ in range(10)))
        assert all(r.response.startswith("250") for r in results)
        assert len(sink.messages) == 10 and sink.connections <= 2
        await pools.close()


async def test_failure_phases_and_reconnect_after_drop() -> None:
    async with SmtpSink(username="u", password="right") as sink:
        pools = SmtpPools(size=1, timeout=10)
        bad = pools.get("mbx_1", Account("127.0.0.1", sink.port, "none", "u", "wrong"))
        with pytest.raises(SmtpFailure) as auth:
            await bad.send("a@example.test", ["b@example.test"], DATA)
        assert auth.value.phase == "connect"
        good = pools.get("mbx_1", Account("127.0.0.1", sink.port, "none", "u", "right"))
        assert good is not bad  # a changed account replaces the pool
        sink.drop_after_data_next(1)
        with pytest.raises(SmtpFailure) as dropped:
            await good.send("a@example.test", ["b@example.test"], DATA)
        assert dropped.value.phase == "data"
        sink.reject_always(550, "5.1.1 nope", at="rcpt")
        with pytest.raises(SmtpFailure) as refused:
            await good.send("a@example.test", ["b@example.test"], DATA)
        assert refused.value.phase == "rcpt"
        sink.reset()
        assert (await good.send("a@example.test", ["b@example.test"], DATA)).response.startswith("250")
        assert len(sink.messages) == 1
        await pools.close()


async def test_connection_refused_is_a_connect_failure() -> None:
    pools = SmtpPools(size=1, timeout=5)
    pool = pools.get("mbx_1", Account("127.0.0.1", 1, "none"))
    with pytest.raises(SmtpFailure) as exc:
        await pool.send("a@example.test", ["b@example.test"], DATA)
    assert exc.value.phase == "connect"
    await pools.close()
