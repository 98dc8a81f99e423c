"""The frames of a publish, encoded once per destination: what pamqp (RabbitMQ's side of the
wire, as far as a unit test goes) reads back from them is the publish aiormq would have sent."""

from __future__ import annotations

import pamqp.frame
import pytest
from pamqp.body import ContentBody
from pamqp.commands import Basic
from pamqp.header import ContentHeader

from taskq.brokers.amqp_publisher import Frames, Properties

MESSAGE_ID = b"0123456789abcdef0123456789abcdef"


def _read(data: bytes) -> list[tuple[int, object]]:
    frames = []
    while data:
        consumed, channel, frame = pamqp.frame.unmarshal(data)
        frames.append((channel, frame))
        data = data[consumed:]
    return frames


@pytest.mark.parametrize(
    "properties",
    [
        Properties("application/json", 2),
        Properties("application/json", 2, priority=7),
        Properties("application/json", 2, headers={"taskq-eta-ms": 1_764_000_000_123}),
        Properties(),
    ],
)
def test_a_publish_reads_back_as_method_header_and_body(properties: Properties) -> None:
    frames = Frames(3, 131_064, "taskq", "work", True, properties)
    [(c1, method), (c2, header), (c3, body)] = _read(frames.encode(b'{"x": 1}', MESSAGE_ID))
    assert c1 == c2 == c3 == 3
    assert isinstance(method, Basic.Publish)
    assert (method.exchange, method.routing_key, method.mandatory) == ("taskq", "work", True)
    assert isinstance(header, ContentHeader) and header.body_size == 8
    read = header.properties
    assert read.message_id == MESSAGE_ID.decode()
    assert (read.content_type, read.delivery_mode) == (
        properties.content_type,
        properties.delivery_mode,
    )
    assert (read.priority, read.headers) == (properties.priority, properties.headers)
    assert isinstance(body, ContentBody) and body.value == b'{"x": 1}'


def test_a_body_larger_than_a_frame_is_split_and_an_empty_one_sends_no_body_frame() -> None:
    frames = Frames(1, 10, "", "q", False, Properties("application/json", 2))
    body = bytes(range(25))
    _, header, *parts = (frame for _, frame in _read(frames.encode(body, MESSAGE_ID)))
    assert isinstance(header, ContentHeader) and header.body_size == 25
    assert [len(p.value) for p in parts if isinstance(p, ContentBody)] == [10, 10, 5]
    assert b"".join(p.value for p in parts if isinstance(p, ContentBody)) == body
    assert len(_read(frames.encode(b"", MESSAGE_ID))) == 2
