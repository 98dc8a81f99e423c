"""Publishing on aiormq's confirm-mode channel without aiormq's per-publish objects.

aiormq's `basic_publish` builds and marshals pamqp objects for the method and header frames
of every message (`Basic.Publish`, `ContentHeader`, a `ContentBody` per frame), draws a random
message id, arms a timeout and takes the channel's lock. Here the method and header frames are
encoded once per destination and set of properties (`Frames`, kept per channel): a publish
writes its body size, message id and body into them; the publishes of one `send` enter the
connection's write queue as one frame, and each registers its confirm where aiormq's channel
reader settles it. Acks and nacks, one at a time or `multiple`, settle it by delivery tag
(`channel.confirmations`); a basic.return, which RabbitMQ sends before the ack, by message id
(`channel.message_id_delivery_tag`), as aiormq's own publish does. A closing channel rejects
the confirm with the reason (aiormq's future store).

A publish's delivery tag is the channel's count of publishes, so it is taken as its frames
enter the write queue, in the queue's order; every publish on such a channel goes through
here (aiormq's own counts its tag before it may wait for room in the queue).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import aiormq
import pamqp.frame
from aiormq.abc import ChannelFrame
from aiormq.exceptions import ChannelInvalidStateError
from pamqp.commands import Basic
from pamqp.header import ContentHeader

# Every message id is as long (16 random hex digits per publisher, then 16 of a count), so a
# frame's place for it is known in advance.
_ID_PREFIX_BYTES = 8
_ID_LENGTH = 32
_FRAME_END = b"\xce"
_BODY_FRAME = struct.Struct(">BHI")  # type, channel, size
_BODY_SIZE = struct.Struct(">Q")
_FRAME_HEAD = 7  # type, channel, size
_SIZE_AT = 4  # in a header frame's payload: class id, weight, then the body size
# Destinations and property sets encoded per channel before the cache starts over: topic
# routing keys can be as many as the messages.
CACHED_FRAMES = 1024


@dataclass(frozen=True, slots=True)
class Properties:
    """The basic properties taskq sets (the message id is the publisher's)."""

    content_type: str | None = None
    delivery_mode: int | None = None
    priority: int | None = None
    headers: dict[str, Any] | None = None


# exchange, routing key, mandatory, properties: what a publish's method and header frames hold
Destination = tuple[str, str, bool, Properties]
Publish = tuple[Destination, bytes]  # and the body


class Frames:
    """A publish's method and header frames to one destination with one set of properties,
    encoded once; `encode` fills in a message."""

    __slots__ = ("_body_head", "_channel", "_head", "_max_body", "_middle")

    def __init__(
        self,
        channel: int,
        max_body: int,
        exchange: str,
        routing_key: str,
        mandatory: bool,
        properties: Properties,
    ) -> None:
        method = Basic.Publish(exchange=exchange, routing_key=routing_key, mandatory=mandatory)
        placeholder = "0" * _ID_LENGTH
        basic = Basic.Properties(
            content_type=properties.content_type,
            delivery_mode=properties.delivery_mode,
            priority=properties.priority,
            headers=properties.headers,
            message_id=placeholder,  # the last property set: its bytes end the frame
        )
        header = pamqp.frame.marshal(ContentHeader(properties=basic), channel)
        assert header.endswith(placeholder.encode() + _FRAME_END)
        size_at = _FRAME_HEAD + _SIZE_AT
        self._head = pamqp.frame.marshal(method, channel) + header[:size_at]
        self._middle = header[size_at + _BODY_SIZE.size : -_ID_LENGTH - 1]
        self._body_head = _FRAME_END + _BODY_FRAME.pack(3, channel, 0)[:3]
        self._channel = channel
        self._max_body = max_body

    def encode(self, body: bytes, message_id: bytes) -> bytes:
        """The frames of one publish, body frames included."""
        size = len(body)
        head = (self._head, _BODY_SIZE.pack(size), self._middle, message_id)
        if size == 0:
            return b"".join((*head, _FRAME_END))
        if size < self._max_body:  # aiormq's bound: one frame
            return b"".join((*head, self._body_head, size.to_bytes(4, "big"), body, _FRAME_END))
        chunks = [body[at : at + self._max_body] for at in range(0, size, self._max_body)]
        frames = b"".join(
            _BODY_FRAME.pack(3, self._channel, len(chunk)) + chunk + _FRAME_END for chunk in chunks
        )
        return b"".join((*head, _FRAME_END, frames))


class Publisher:
    """Publishes on the confirm-mode aiormq channels of one robust channel, one after another
    as the robust connection replaces them."""

    def __init__(self) -> None:
        self._prefix = os.urandom(_ID_PREFIX_BYTES).hex()
        self._count = itertools.count()
        self._channel: aiormq.Channel | None = None
        self._frames: dict[Destination, Frames] = {}

    async def send(
        self, channel: aiormq.Channel, publishes: Sequence[Publish]
    ) -> list[asyncio.Future[Any]]:
        """Queue `publishes` on `channel`, their frames in one write: their confirms, each
        settled by RabbitMQ's ack (a nack, a basic.return or the channel's closing raise).
        Raises `ChannelInvalidStateError`, having sent nothing, when the channel is closed."""
        if channel.is_closed:
            raise ChannelInvalidStateError(f"{channel!r} closed")
        ids = [f"{self._prefix}{next(self._count):016x}" for _ in publishes]
        payload = b"".join(
            self._frames_of(channel, destination).encode(body, message_id.encode())
            for (destination, body), message_id in zip(publishes, ids, strict=True)
        )
        frame = ChannelFrame(payload=payload, should_close=False)
        queue = channel.write_queue
        if queue.full():
            await queue.put(frame)
        else:
            queue.put_nowait(frame)
        # No await since the frames entered the queue: the tags follow the queue's order. (A
        # channel that closed meanwhile rejects the confirms at once.)
        confirmations = []
        for message_id in ids:
            channel.delivery_tag += 1
            tag = channel.delivery_tag
            confirmation = channel.create_future()
            channel.confirmations[tag] = confirmation
            channel.message_id_delivery_tag[message_id] = tag
            confirmation.add_done_callback(partial(_forget, channel, message_id, tag))
            confirmations.append(confirmation)
        return confirmations

    def _frames_of(self, channel: aiormq.Channel, destination: Destination) -> Frames:
        if destination[3].headers is not None:  # their values vary by message: not kept
            return _encoded(channel, destination)
        if channel is not self._channel or len(self._frames) >= CACHED_FRAMES:
            self._channel = channel
            self._frames.clear()
        frames = self._frames.get(destination)
        if frames is None:
            frames = self._frames[destination] = _encoded(channel, destination)
        return frames


def _encoded(channel: aiormq.Channel, destination: Destination) -> Frames:
    return Frames(channel.number, channel.max_content_size, *destination)


def _forget(channel: aiormq.Channel, message_id: str, tag: int, _: asyncio.Future[Any]) -> None:
    if channel.message_id_delivery_tag.get(message_id) == tag:
        del channel.message_id_delivery_tag[message_id]
