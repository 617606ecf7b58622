"""BufferedFrameReceiver: the frames, order and errors of aiormq's receiver, read in chunks."""

from __future__ import annotations

import asyncio
import inspect
from datetime import UTC, datetime
from typing import Any

import aiormq.connection
import pamqp.frame
import pytest
from aiormq.exceptions import AMQPConnectionError, InvalidFrameError, ProtocolSyntaxError
from pamqp import commands as spec
from pamqp.body import ContentBody
from pamqp.header import ContentHeader
from pamqp.heartbeat import Heartbeat

from gateway.bus import frames
from gateway.bus.frames import BufferedFrameReceiver, FrameBuffer

PROPERTIES = [
    spec.Basic.Properties(),
    spec.Basic.Properties(content_type="application/json", headers={}, message_id="evt_1",
                          delivery_mode=2),
    spec.Basic.Properties(
        content_type="text/plain", content_encoding="gzip",
        headers={"x-death": [{"count": 2, "reason": "rejected"}], "n": 7, "ok": True, "s": "é"},
        delivery_mode=1, priority=9, correlation_id="c", reply_to="amq.rabbitmq.reply-to",
        expiration="60000", message_id="m" * 255, timestamp=datetime(2026, 11, 25, 9, 0, tzinfo=UTC),
        message_type="email.sent", user_id="guest", app_id="mailgw",
    ),
]
FRAMES: list[tuple[Any, int]] = [
    (spec.Basic.Deliver("ctag1.abc", 1, False, "mailgw.events", "email.sent"), 1),
    (spec.Basic.Deliver("ctäg", 2**63 - 1, True, "", "ключ"), 65535),
    *[(ContentHeader(body_size=n, properties=p), 1) for n, p in zip((0, 450, 2**40), PROPERTIES,
                                                                    strict=True)],
    (ContentBody(b'{"id":"evt_1"}'), 1),
    (ContentBody(b"\xff" * 70_000), 3),
    (spec.Basic.Ack(delivery_tag=5, multiple=True), 2),
    (spec.Basic.ConsumeOk("ctag1.abc"), 1),
    (spec.Channel.Close(406, "PRECONDITION_FAILED - unknown delivery tag 9", 60, 80), 1),
    (spec.Connection.Tune(2047, 131072, 60), 0),
    (Heartbeat(), 0),
]


def wire(frame: Any, channel: int) -> bytes:
    return pamqp.frame.marshal(frame, channel)


def fields(frame: Any) -> tuple[Any, ...]:
    """What a frame carries, comparable across two decodings."""
    if isinstance(frame, ContentHeader):
        props = frame.properties
        return (type(frame), frame.class_id, frame.weight, frame.body_size,
                *[getattr(props, name) for name in type(props).__slots__])
    if isinstance(frame, ContentBody):
        return type(frame), frame.value
    slots = getattr(type(frame), "__slots__", [])
    return (type(frame), *[getattr(frame, name) for name in slots])


def same(got: frames.ReceivedFrame, data: bytes) -> None:
    expected = pamqp.frame.unmarshal(data)
    assert got[:2] == expected[:2]
    assert fields(got[2]) == fields(expected[2])


@pytest.mark.parametrize(("frame", "channel"), FRAMES)
def test_decodes_like_pamqp(frame: Any, channel: int) -> None:
    data = wire(frame, channel)
    buffer = FrameBuffer()
    buffer.feed(data)
    got = buffer.next_frame()
    assert got is not None
    same(got, data)
    assert buffer.next_frame() is None and buffer.pending == 0


def test_cuts_frames_fed_in_any_pieces() -> None:
    stream = b"".join(wire(f, c) for f, c in FRAMES)
    for step in (1, 7, 8, 1000, len(stream)):
        buffer = FrameBuffer()
        got: list[frames.ReceivedFrame] = []
        for at in range(0, len(stream), step):
            buffer.feed(stream[at:at + step])
            while (frame := buffer.next_frame()) is not None:
                got.append(frame)
        assert len(got) == len(FRAMES)
        for received, (frame, channel) in zip(got, FRAMES, strict=True):
            same(received, wire(frame, channel))
        assert buffer.pending == 0


def test_reports_how_much_the_next_frame_lacks() -> None:
    data = wire(ContentBody(b"x" * 100), 1)
    buffer = FrameBuffer()
    buffer.feed(data[:3])
    assert buffer.missing() == 4  # the rest of the 7-byte frame header
    buffer.feed(data[3:50])
    assert buffer.next_frame() is None
    assert buffer.missing() == len(data) - 50


def test_malformed_frames_fail_as_pamqp_says() -> None:
    bad_end = bytearray(wire(spec.Basic.Deliver("c", 1, False, "x", "k"), 1))
    bad_end[-1] = 0
    unknown = b"\x01\x00\x01\x00\x00\x00\x04\x00\x63\x00\x01\xce"  # method index 0x00630001
    for data in (bytes(bad_end), unknown):
        buffer = FrameBuffer()
        buffer.feed(data)
        with pytest.raises(InvalidFrameError):
            buffer.next_frame()


def cut_deliver(cut: int) -> bytes:
    """A Basic.Deliver frame whose payload lacks its last `cut` bytes (the routing key's)."""
    payload = wire(spec.Basic.Deliver("ctag", 1, False, "ex", "key"), 1)[7:-1][:-cut]
    return b"\x01\x00\x01" + len(payload).to_bytes(4, "big") + payload + b"\xce"


def test_truncated_arguments_fall_back_to_pamqp() -> None:
    """A payload shorter than its strings claim is pamqp's to judge, as without the buffer:
    a missing length octet is an error, a string cut short is taken as it is."""
    buffer = FrameBuffer()
    buffer.feed(cut_deliver(4))
    with pytest.raises(InvalidFrameError, match="Could not unpack short string value"):
        buffer.next_frame()
    buffer = FrameBuffer()
    buffer.feed(cut_deliver(2))
    got = buffer.next_frame()
    assert got is not None
    same(got, cut_deliver(2))
    assert getattr(got[2], "routing_key", None) == "k"


def test_a_protocol_header_from_the_server_is_refused() -> None:
    buffer = FrameBuffer()
    buffer.feed(b"AMQP\x00\x00\x09\x01")
    with pytest.raises(ProtocolSyntaxError):
        buffer.next_frame()


def test_protocol_header_check_ends_with_the_first_frame() -> None:
    buffer = FrameBuffer()
    buffer.feed(wire(Heartbeat(), 0))
    assert buffer.next_frame() is not None
    assert buffer.started


async def test_receiver_reads_chunks_until_a_frame_is_complete() -> None:
    reader = asyncio.StreamReader()
    receiver = BufferedFrameReceiver(reader)
    data = wire(FRAMES[0][0], 1) + wire(FRAMES[3][0], 1)
    reader.feed_data(data[:10])
    pending = asyncio.ensure_future(receiver.get_frame())
    await asyncio.sleep(0)  # the receiver is waiting for the rest of the frame
    assert not pending.done()
    reader.feed_data(data[10:])
    first = await pending
    same(first, wire(FRAMES[0][0], 1))
    same(await receiver.get_frame(), wire(FRAMES[3][0], 1))


async def test_eof_between_frames_ends_iteration() -> None:
    reader = asyncio.StreamReader()
    reader.feed_data(wire(Heartbeat(), 0))
    reader.feed_eof()
    got = [frame async for frame in BufferedFrameReceiver(reader)]
    assert [type(f[2]) for f in got] == [Heartbeat]


async def test_eof_inside_a_frame_is_a_connection_error() -> None:
    reader = asyncio.StreamReader()
    reader.feed_data(wire(ContentBody(b"x" * 100), 1)[:20])
    reader.feed_eof()
    with pytest.raises(AMQPConnectionError, match="Read 20 bytes but 108 bytes expected"):
        await BufferedFrameReceiver(reader).get_frame()


async def test_eof_while_waiting_is_a_connection_error() -> None:
    """As in aiormq: the stream ends while the receiver waits for a frame."""
    reader = asyncio.StreamReader()
    receiver = BufferedFrameReceiver(reader)
    pending = asyncio.ensure_future(receiver.get_frame())
    await asyncio.sleep(0)
    reader.feed_eof()
    with pytest.raises(AMQPConnectionError, match="unexpectedly closed"):
        await pending


async def test_socket_errors_become_connection_errors() -> None:
    reader = asyncio.StreamReader()
    reader.set_exception(ConnectionResetError("reset by peer"))
    with pytest.raises(AMQPConnectionError, match="reset by peer"):
        await BufferedFrameReceiver(reader).get_frame()


def test_install_replaces_the_receiver_aiormq_connects_with(monkeypatch: pytest.MonkeyPatch) -> None:
    # aiormq 7.2 creates its receiver by this module-level name; an upgrade that stops
    # doing so would silently drop the buffered receiver, so this is checked here.
    assert "FrameReceiver(reader)" in inspect.getsource(aiormq.connection.Connection.connect)
    monkeypatch.setattr(aiormq.connection, "FrameReceiver", aiormq.connection.FrameReceiver)
    frames.install()
    assert aiormq.connection.FrameReceiver is BufferedFrameReceiver
