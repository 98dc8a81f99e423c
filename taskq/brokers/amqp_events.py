"""Task events on RabbitMQ: a stream queue, so that a reader started later reads them back.

    queue  <default>.events   a stream (RabbitMQ 3.9+): x-max-age of `event_retention`,
                              segments of SEGMENT_BYTES; every payload of task events

A fanout to a queue per reader (the control plane's way, and Celery's) keeps nothing for a
reader that was not there yet, and a shared queue hands each payload to one reader only. A
stream is a log that every reader reads with a cursor of its own and nobody consumes, which
is what "read back the last N minutes" needs. A reader consumes it over AMQP 0.9.1 with a
prefetch (basic.qos) and manual acks (RabbitMQ requires both), from `x-stream-offset`: a
timestamp, `since` seconds back or the current second. RabbitMQ drops whole segments once
they are older than `x-max-age`, so what is kept is at least the last `event_retention`
seconds (an older tail of at most one segment may remain; a reader asking for `since` seconds
starts there anyway). A reader whose link is restored consumes again from the same timestamp;
the offsets it has read already (each delivery's `x-stream-offset` header) are skipped.
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import anyio
from aio_pika.abc import AbstractChannel, AbstractQueue, AbstractRobustChannel
from aiormq.exceptions import ChannelPreconditionFailed

from taskq.brokers.amqp_consumer import int_header, winding_down
from taskq.errors import ConfigurationError

SEGMENT_BYTES = 1_000_000  # a stream's segment: what RabbitMQ drops at once
READ_PREFETCH = 100  # payloads a reader has in flight before it acks


class EventStream:
    """The stream `<exchange>.events`, kept for `retention` seconds."""

    def __init__(self, exchange: str, retention: float, close_timeout: float) -> None:
        self.name = f"{exchange}.events"
        self.arguments: dict[str, Any] = {
            "x-queue-type": "stream",
            "x-max-age": f"{math.ceil(retention)}s",
            "x-stream-max-segment-size-bytes": SEGMENT_BYTES,
        }
        self._close_timeout = close_timeout
        # RabbitMQ answers a declaration of a stream that another one is creating at once,
        # before the stream is started: what is sent to it then closes the connection
        # ("Stream not found"). This process's declarations (its publisher's, its readers')
        # go one at a time.
        self._declaring = anyio.Lock()

    async def declare(self, channel: AbstractChannel) -> AbstractQueue:
        try:
            async with self._declaring:
                return await channel.declare_queue(
                    self.name, durable=True, arguments=self.arguments
                )
        except ChannelPreconditionFailed as exc:
            raise ConfigurationError(
                f"RabbitMQ queue {self.name!r} exists but not as a stream kept "
                f"{self.arguments['x-max-age']} (event_retention): delete it, or set "
                f"event_retention to what it keeps ({exc})"
            ) from exc

    async def read(
        self, open_channel: Callable[[], Awaitable[AbstractRobustChannel]], since: float | None
    ) -> AsyncGenerator[bytes, None]:
        """The payloads from `since` seconds back (None: from about now), until the broker
        closes."""
        start = datetime.fromtimestamp(time.time() - (since or 0.0), UTC)
        channel = await open_channel()
        try:
            await channel.set_qos(prefetch_count=READ_PREFETCH)
            queue = await self.declare(channel)
            last = -1
            async with queue.iterator(arguments={"x-stream-offset": start}) as deliveries:
                async for delivery in deliveries:
                    offset = int_header(delivery.headers, "x-stream-offset")
                    if offset is None or offset > last:
                        last = last if offset is None else offset
                        yield delivery.body
                    await delivery.ack()
        finally:
            with winding_down(self._close_timeout):
                await channel.close()
