"""Reading AMQP frames in chunks: a cheaper frame receiver for aiormq's connections.

aiormq (pinned 7.2.x) reads every frame with three `readexactly` calls under a lock, copies
it through a `BytesIO` and has pamqp decode it generically (attribute by attribute, through
`decode.by_type`). For a consumer that is several calls per frame and three frames per
message. `BufferedFrameReceiver` reads whatever the socket has (up to `CHUNK` bytes) and
cuts the complete frames out of that buffer; the frames of a delivered message (method,
content header, body) are decoded directly, every other frame by pamqp itself. The frames
it returns, their order and the errors it raises are those of aiormq's receiver, which it
replaces for the process with `install()` (aiormq creates its receiver by that module-level
name in `Connection.connect`; a unit test checks that this still holds).
"""

from __future__ import annotations

import asyncio
import struct

import aiormq.connection
import pamqp.frame
from aiormq.exceptions import AMQPConnectionError, InvalidFrameError, ProtocolSyntaxError
from pamqp import commands as spec
from pamqp import constants, decode
from pamqp.body import ContentBody
from pamqp.exceptions import PAMQPException
from pamqp.frame import FrameTypes
from pamqp.header import ContentHeader

# (bytes the frame takes on the wire, channel, frame): what aiormq's receiver returns.
ReceivedFrame = tuple[int, int, FrameTypes]

CHUNK = 256 * 1024  # at most this much is taken from the stream per read
FRAME_HEADER = struct.Struct(">BHI")  # frame type, channel, payload size
_HEADER_SIZE = FRAME_HEADER.size  # 7
_U32 = struct.Struct(">I")
_I64 = struct.Struct(">q")  # pamqp decodes longlong as signed
CONTENT_HEADER = struct.Struct(">HHQH")  # class id, weight, body size, first property flags
_DELIVER = spec.Basic.Deliver.index
_FRAME_END = constants.FRAME_END

# Basic.Properties in wire order: (attribute, flag, pamqp type).
_PROPERTIES = tuple(
    (name, spec.Basic.Properties.flags[name], getattr(spec.Basic.Properties, "_" + name))
    for name in spec.Basic.Properties.__slots__
)


class _Fallback(Exception):
    """The fast decoder does not handle this payload: pamqp decodes it (or reports why not)."""


def _short_str(data: bytes, pos: int) -> tuple[str, int]:
    end = pos + 1 + data[pos]
    if end > len(data):
        raise _Fallback
    return data[pos + 1:end].decode("utf-8"), end


def _deliver(data: bytes, pos: int, end: int) -> spec.Basic.Deliver:
    """`Basic.Deliver` arguments from `data[pos:end]`, set as pamqp's decoder sets them
    (no validation: pamqp validates what it sends, not what it receives)."""
    frame = spec.Basic.Deliver.__new__(spec.Basic.Deliver)
    frame.consumer_tag, pos = _short_str(data, pos)
    if pos + 9 > end:
        raise _Fallback
    frame.delivery_tag = _I64.unpack_from(data, pos)[0]
    frame.redelivered = bool(data[pos + 8] & 1)
    frame.exchange, pos = _short_str(data, pos + 9)
    frame.routing_key, pos = _short_str(data, pos)
    if pos > end:
        raise _Fallback
    return frame


def _content_header(payload: bytes) -> ContentHeader:
    class_id, weight, body_size, flags = CONTENT_HEADER.unpack_from(payload, 0)
    if flags & 1:  # a second flag word: no Basic property needs one, let pamqp judge it
        raise _Fallback
    props = spec.Basic.Properties()
    pos = CONTENT_HEADER.size
    for name, flag, kind in _PROPERTIES:
        if not flags & flag:
            continue
        value: object
        if kind == "shortstr":
            value, pos = _short_str(payload, pos)
        elif kind == "octet":
            value, pos = payload[pos], pos + 1
        else:  # table, timestamp
            consumed, value = decode.by_type(payload[pos:], kind)
            pos += consumed
        setattr(props, name, value)
    if pos > len(payload):
        raise _Fallback
    header = ContentHeader(weight, body_size, props)
    header.class_id = class_id
    return header


def decode_frame(frame_type: int, channel: int, data: bytes, start: int, end: int) -> ReceivedFrame:
    """The frame whose bytes are `data[start:end]` (header and end octet included), decoded
    as `pamqp.frame.unmarshal` decodes it; pamqp's errors become aiormq's `InvalidFrameError`."""
    size = end - start
    payload_at = start + _HEADER_SIZE
    try:
        if data[end - 1] != _FRAME_END:
            raise _Fallback
        if frame_type == constants.FRAME_BODY and size > _HEADER_SIZE + 1:
            return size, channel, ContentBody(data[payload_at:end - 1])
        if frame_type == constants.FRAME_METHOD and size >= _HEADER_SIZE + 5:
            if _U32.unpack_from(data, payload_at)[0] == _DELIVER:
                return size, channel, _deliver(data, payload_at + 4, end - 1)
        elif frame_type == constants.FRAME_HEADER and size >= _HEADER_SIZE + CONTENT_HEADER.size + 1:
            return size, channel, _content_header(data[payload_at:end - 1])
    except (_Fallback, ValueError, IndexError, struct.error):
        pass  # malformed or unusual: pamqp decodes it, or says what is wrong
    try:
        return pamqp.frame.unmarshal(data[start:end])
    except PAMQPException as exc:
        raise InvalidFrameError(str(exc)) from exc


class FrameBuffer:
    """Bytes received so far, from which complete frames are cut in order."""

    def __init__(self) -> None:
        self._data = b""
        self._pos = 0  # start of the first frame not yet cut
        self.started = False  # a first frame was cut (the server spoke AMQP frames)

    def feed(self, chunk: bytes) -> None:
        self._data = self._data[self._pos:] + chunk if self._pos < len(self._data) else chunk
        self._pos = 0

    @property
    def pending(self) -> int:
        """Bytes received but not yet cut into frames."""
        return len(self._data) - self._pos

    def missing(self) -> int:
        """At least how many more bytes the next frame needs."""
        data, pos = self._data, self._pos
        if len(data) - pos < _HEADER_SIZE:
            return _HEADER_SIZE - (len(data) - pos)
        size: int = FRAME_HEADER.unpack_from(data, pos)[2]
        return pos + _HEADER_SIZE + size + 1 - len(data)

    def next_frame(self) -> ReceivedFrame | None:
        """The next complete frame, decoded; None until all its bytes have been fed."""
        data, pos = self._data, self._pos
        if not self.started and data.startswith(b"AMQP", pos):
            # A protocol header instead of frames: the server refuses our protocol version.
            raise ProtocolSyntaxError("Unexpected AMQP protocol header")
        if len(data) - pos < _HEADER_SIZE:
            return None
        frame_type, channel, size = FRAME_HEADER.unpack_from(data, pos)
        end = pos + _HEADER_SIZE + size + 1
        if end > len(data):
            return None
        self._pos = end
        self.started = True
        return decode_frame(frame_type, channel, data, pos, end)


class BufferedFrameReceiver(aiormq.connection.FrameReceiver):
    """aiormq's `FrameReceiver`, reading the stream in chunks (see the module docstring)."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        super().__init__(reader)
        self._frames = FrameBuffer()

    async def get_frame(self) -> ReceivedFrame:
        frame = self._frames.next_frame()
        if frame is not None:  # the usual case: nothing to await
            return frame
        async with self.lock:  # one reader of the stream at a time, as in aiormq
            while (frame := self._frames.next_frame()) is None:
                await self._read()
        return frame

    async def _read(self) -> None:
        if self._frames.pending == 0 and self.reader.at_eof():
            del self.reader  # as aiormq does: the connection ended between frames
            raise StopAsyncIteration
        try:
            chunk = await self.reader.read(CHUNK)
        except ConnectionError as exc:
            raise AMQPConnectionError(f"Server connection error: {exc!r}") from exc
        except OSError as exc:
            raise AMQPConnectionError(f"Server communication error: {exc!r}") from exc
        if not chunk:
            raise AMQPConnectionError(
                "Server connection unexpectedly closed. Read "
                f"{self._frames.pending} bytes but {self._frames.pending + self._frames.missing()}"
                " bytes expected",
            )
        self._frames.feed(chunk)


def install() -> None:
    """Have every aiormq connection opened from now on use `BufferedFrameReceiver`."""
    aiormq.connection.FrameReceiver = BufferedFrameReceiver  # type: ignore[misc]
