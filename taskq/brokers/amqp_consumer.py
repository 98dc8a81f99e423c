"""Consuming from RabbitMQ: one channel per `consume()`, its deliveries, and the eta check.

A message whose `taskq-eta-ms` header is still in the future (it came back early from a delay
bucket, or was routed through an exchange with a countdown) is never handed to the worker:
the consumer parks a copy in the queue's delay bucket (publisher-confirmed) and acks it.

The channel outlives the consume loop: when the loop stops, its consumers are cancelled and
messages received but never yielded go back to the queue at once, while those the worker
holds can still be settled; the channel closes when the last of them is. A delivery whose
channel died (the connection dropped) is already back in its queue on the broker, so
settling it does nothing and a buffered one is dropped instead of yielded.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from functools import partial
from typing import Any, Protocol

import anyio
import anyio.lowlevel
from aio_pika.abc import (
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustChannel,
    AbstractRobustConnection,
)
from aiormq.exceptions import AMQPError, ChannelInvalidStateError

from taskq.brokers.amqp_topology import AMQPConfig, declare_queue
from taskq.brokers.base import Delivery
from taskq.errors import ConfigurationError

logger = logging.getLogger("taskq.brokers.amqp")

# Times travel as integer epoch milliseconds: AMQP tables carry a Python float as 32 bits.
ETA_HEADER = "taskq-eta-ms"
DELIVERIES_HEADER = "taskq-deliveries"  # deliveries before the message was published again
QUORUM_COUNT_HEADER = "x-delivery-count"  # set by quorum queues on a redelivery
MAX_PREFETCH = 65535  # basic.qos takes a 16-bit count
# What a lost connection (or a broker that stopped answering) raises.
LINK_ERRORS = (AMQPError, ChannelInvalidStateError, ConnectionError, TimeoutError)


class Republisher(Protocol):
    """What a consumer needs of its broker to replace a message by a confirmed copy."""

    async def park(
        self, message: AbstractIncomingMessage, queue: str, due: float, deliveries: int
    ) -> None:
        """Publish a copy into `queue`'s delay bucket, to come back when `due`."""
        ...

    async def add_dead_letter(self, queue: str, body: bytes, reason: str) -> None: ...


@contextlib.contextmanager
def winding_down(seconds: float) -> Iterator[None]:
    """For cancelling, closing and giving back: shielded from the caller's cancellation but
    bounded, and quiet about a link that is gone already."""
    with anyio.move_on_after(seconds, shield=True), contextlib.suppress(*LINK_ERRORS):
        yield


def int_header(headers: dict[str, Any], name: str) -> int | None:
    value = headers.get(name)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def to_milliseconds(epoch: float) -> int:
    """Rounded up: a due time must never come earlier on the way."""
    return math.ceil(epoch * 1000)


def due_time(message: AbstractIncomingMessage) -> float | None:
    """When the message may run (epoch seconds), if it carries an eta."""
    milliseconds = int_header(message.headers or {}, ETA_HEADER)
    return None if milliseconds is None else milliseconds / 1000


def earlier_deliveries(message: AbstractIncomingMessage) -> int:
    """Deliveries of the message before it was last published again (delayed by a nack)."""
    return int_header(message.headers or {}, DELIVERIES_HEADER) or 0


def delivery_count(message: AbstractIncomingMessage) -> int:
    """Deliveries so far: those before a republish, plus this queue's own count."""
    headers = message.headers or {}
    before = earlier_deliveries(message)
    quorum = int_header(headers, QUORUM_COUNT_HEADER)
    if quorum is not None:
        return before + quorum + 1
    return before + (2 if message.redelivered else 1)


async def send_ack(message: AbstractIncomingMessage) -> None:
    """Return once the ack is written to the socket, not merely queued for aiormq's writer: a
    worker killed with an ack still queued would see the task delivered again, an early-acked
    one run twice, an `acks_late` one that had finished run again beside those it was running."""
    await message.channel.basic_ack(delivery_tag(message))


async def send_requeue(message: AbstractIncomingMessage) -> None:
    # Not waited for: a requeue lost in a crash comes back with the channel all the same.
    await message.channel.basic_nack(delivery_tag(message), requeue=True, wait=False)


def delivery_tag(message: AbstractIncomingMessage) -> int:
    if message.delivery_tag is None:  # only basic.get-empty and returned messages lack one
        raise ValueError("not a delivered message")
    return message.delivery_tag


class AMQPDelivery(Delivery):
    """A consumed message, unacked on its consumer's channel until it is settled once."""

    __slots__ = ("_consumer", "_message")
    LOST = LINK_ERRORS

    def __init__(self, message: AbstractIncomingMessage, queue: str, consumer: Consumer) -> None:
        super().__init__(message.body, queue, delivery_count(message))
        self._message = message
        self._consumer = consumer

    async def _ack(self) -> None:
        await send_ack(self._message)

    async def _requeue(self, delay: float | None) -> None:
        if delay:
            await self._replace(self._park_copy, time.time() + delay)
        else:
            await send_requeue(self._message)

    async def _bury(self, reason: str) -> None:
        await self._replace(self._consumer.host.add_dead_letter, self.queue, self.body, reason)

    async def _extend(self, seconds: float) -> None:
        # Nothing to renew: an unacked message stays ours for as long as the channel lives.
        await anyio.lowlevel.checkpoint()

    async def _released(self) -> None:
        await self._consumer.settled(self)

    def stale(self) -> bool:
        """True when the channel it came on has closed: RabbitMQ requeued it then."""
        try:
            return self._message.channel.is_closed
        except ChannelInvalidStateError:
            return True

    async def give_back(self) -> None:
        """Give back a message that was received but never handed to the consumer."""
        if self.stale():
            await self._settle(anyio.lowlevel.checkpoint)
        else:
            await self._settle(partial(send_requeue, self._message))

    async def _park_copy(self, due: float) -> None:
        await self._consumer.host.park(self._message, self.queue, due, self.delivery_count)

    async def _replace(self, publish: Callable[..., Awaitable[None]], *args: Any) -> None:
        """Publish a confirmed copy, then ack; if the copy fails, requeue the original."""
        try:
            await publish(*args)
        except BaseException:
            with winding_down(self._consumer.timeout):
                await send_requeue(self._message)
            raise
        await send_ack(self._message)


class Consumer:
    """The consumers of one `consume()` call, on a channel of their own."""

    def __init__(
        self, host: Republisher, config: AMQPConfig, held: Counter[str], prefetch: int
    ) -> None:
        self.host = host
        self.timeout = config.publish_timeout
        self._config = config
        self._held = held  # the broker's count of unsettled deliveries per queue
        self._prefetch = prefetch
        self._send, self._receive = anyio.create_memory_object_stream[AMQPDelivery](math.inf)
        self._channel: AbstractRobustChannel | None = None
        self._consumers: list[tuple[AbstractQueue, str]] = []
        self._outstanding: set[AMQPDelivery] = set()
        self._stopping = False
        self._ended = False

    async def start(self, connection: AbstractRobustConnection, names: Sequence[str]) -> None:
        self._channel = channel = await connection.channel(publisher_confirms=False)
        # Global QoS bounds all the channel's consumers together, but quorum queues refuse it.
        shared = len(names) > 1 and not any(map(self._config.is_quorum, names))
        count = self._prefetch if shared else max(1, self._prefetch // len(names))
        await channel.set_qos(prefetch_count=min(count, MAX_PREFETCH), global_=shared)
        for name in names:
            queue = await declare_queue(channel, self._config, name)
            tag = await queue.consume(partial(self._on_message, name))
            self._consumers.append((queue, tag))

    async def next(self) -> AMQPDelivery | None:
        """The next delivery, or None once the broker was closed. One already received is
        taken without a checkpoint: what arrived in one read reaches the worker in one turn
        of the loop, and their acks leave in one write."""
        while True:
            try:
                delivery = self._receive.receive_nowait()
            except anyio.WouldBlock:
                try:
                    delivery = await self._receive.receive()
                except anyio.EndOfStream:
                    return None
            except anyio.EndOfStream:
                return None
            if delivery.stale():
                await delivery.give_back()
                continue
            self._outstanding.add(delivery)
            return delivery

    def end(self) -> None:
        """The broker is closing: `next()` returns None from now on."""
        self._ended = True
        self._send.close()

    async def stop(self) -> None:
        """Stop consuming; give back what was received and not yielded."""
        self._stopping = True
        for queue, tag in self._consumers:
            with contextlib.suppress(*LINK_ERRORS):
                await queue.cancel(tag)
        self._send.close()
        async for delivery in self._receive:
            await delivery.give_back()
        if not self._outstanding:
            await self._close_channel()

    async def settled(self, delivery: AMQPDelivery) -> None:
        self._held[delivery.queue] -= 1
        self._outstanding.discard(delivery)
        if self._stopping and not self._outstanding:
            await self._close_channel()

    async def _on_message(self, queue: str, message: AbstractIncomingMessage) -> None:
        due = due_time(message)
        if self._stopping or self._ended:
            with contextlib.suppress(*LINK_ERRORS):
                await send_requeue(message)
        elif due is not None and due > time.time():
            await self._park(queue, message, due)
        else:
            self._held[queue] += 1
            self._send.send_nowait(AMQPDelivery(message, queue, self))

    async def _park(self, queue: str, message: AbstractIncomingMessage, due: float) -> None:
        try:
            await self.host.park(message, queue, due, earlier_deliveries(message))
            await send_ack(message)
        except (*LINK_ERRORS, ConfigurationError) as exc:
            # Left unacked: it comes back when this channel closes, and is parked then.
            logger.warning("Could not park a delayed message of %r: %r", queue, exc)

    async def _close_channel(self) -> None:
        channel, self._channel = self._channel, None
        if channel is not None:
            with winding_down(self.timeout):
                await channel.close()
