"""The batched publish sends what `Publisher.publish` sends for an event."""

from __future__ import annotations

import aio_pika
from pamqp.header import ContentHeader

from gateway.bus.batch_publish import properties


def test_properties_are_those_of_publisher_publish() -> None:
    # Publisher.publish builds this aio_pika message for an event.
    message = aio_pika.Message(b"{}", message_id="evt_1", headers={}, reply_to=None, correlation_id=None,
                               content_type="application/json",
                               delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
    ours = ContentHeader(properties=properties("evt_1"), body_size=2).marshal()
    theirs = ContentHeader(properties=message.properties, body_size=2).marshal()
    assert ours == theirs
