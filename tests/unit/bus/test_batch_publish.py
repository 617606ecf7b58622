"""The batched publish sends what `Publisher.publish` sends for an event."""

from __future__ import annotations

import aio_pika
from hypothesis import given, settings
from hypothesis import strategies as st
from pamqp.frame import marshal
from pamqp.header import ContentHeader

from gateway.bus.batch_publish import header_frame, properties


def test_properties_are_those_of_publisher_publish() -> None:
    # Publisher.publish builds this aio_pika message for an event.
    message = aio_pika.Message(b"{}", message_id="evt_1", headers={}, reply_to=None, correlation_id=None,
                               content_type="application/json",
                               delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
    ours = ContentHeader(properties=properties("evt_1"), body_size=2).marshal()
    theirs = ContentHeader(properties=message.properties, body_size=2).marshal()
    assert ours == theirs


@settings(max_examples=300, deadline=None)
@given(channel=st.integers(1, 65535), body_size=st.integers(0, 2**40),
       message_id=st.text(max_size=300) | st.text(st.characters(max_codepoint=127), max_size=300))
def test_header_frame_is_what_pamqp_marshals(channel: int, message_id: str, body_size: int) -> None:
    expected = marshal(ContentHeader(properties=properties(message_id), body_size=body_size), channel)
    assert header_frame(channel, message_id, body_size) == expected


def test_header_frame_for_an_event_id() -> None:
    expected = marshal(ContentHeader(properties=properties("evt_0123456789abcdef"), body_size=3500), 1)
    assert header_frame(1, "evt_0123456789abcdef", 3500) == expected
