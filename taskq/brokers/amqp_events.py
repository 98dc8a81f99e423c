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

The events have a connection of their own, opened on first use: RabbitMQ answers a
declaration of a stream that another process is creating at that moment before the stream
is started, and what is then sent to it closes the whole connection ("Stream not found").
That costs a batch of events (a warning) and a reconnection of this connection, never the
task consumers' and publisher's.
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncGenerator
from datetime import UTC, datetime
from typing import Any

import aio_pika
import anyio
from aio_pika.abc import AbstractChannel, AbstractQueue, AbstractRobustConnection
from aiormq.exceptions import ChannelPreconditionFailed

from taskq.brokers.amqp_connection import open_robust_connection
from taskq.brokers.amqp_consumer import int_header, winding_down
from taskq.errors import ConfigurationError

SEGMENT_BYTES = 1_000_000  # a stream's segment: what RabbitMQ drops at once
READ_PREFETCH = 100  # payloads a reader has in flight before it acks


class EventStream:
    """The stream `<exchange>.events` on `url`, kept for `retention` seconds."""

    def __init__(
        self,
        url: str,
        exchange: str,
        retention: float,
        *,
        reconnect_interval: float,
        timeout: float,
    ) -> None:
        self.name = f"{exchange}.events"
        self.arguments: dict[str, Any] = {
            "x-queue-type": "stream",
            "x-max-age": f"{math.ceil(retention)}s",
            "x-stream-max-segment-size-bytes": SEGMENT_BYTES,
        }
        self._url = url
        self._reconnect_interval = reconnect_interval
        self._timeout = timeout
        self._connection: AbstractRobustConnection | None = None
        self._publisher: AbstractChannel | None = None
        self._opening = anyio.Lock()
        # A declaration answered while another one of this process creates the stream would
        # come before the stream is started (see above): they go one at a time.
        self._declaring = anyio.Lock()

    async def publish(self, payload: bytes) -> None:
        """Append a payload (confirmed), within the publish timeout."""
        with anyio.fail_after(self._timeout):
            channel = await self._publishing_channel()
            message = aio_pika.Message(payload, content_type="application/json")
            await channel.default_exchange.publish(message, routing_key=self.name)

    async def read(self, since: float | None) -> AsyncGenerator[bytes, None]:
        """The payloads from `since` seconds back (None: from about now), until closed."""
        start = datetime.fromtimestamp(time.time() - (since or 0.0), UTC)
        channel = await (await self._connected()).channel(publisher_confirms=False)
        try:
            await channel.set_qos(prefetch_count=READ_PREFETCH)
            queue = await self._declare(channel)
            last = -1
            async with queue.iterator(arguments={"x-stream-offset": start}) as deliveries:
                async for delivery in deliveries:
                    offset = int_header(delivery.headers, "x-stream-offset")
                    if offset is None or offset > last:
                        last = last if offset is None else offset
                        yield delivery.body
                    await delivery.ack()
        finally:
            with winding_down(self._timeout):
                await channel.close()

    async def close(self) -> None:
        connection, self._connection, self._publisher = self._connection, None, None
        if connection is not None:
            with winding_down(self._timeout):
                await connection.close()

    async def _connected(self) -> AbstractRobustConnection:
        async with self._opening:
            return await self._open()

    async def _publishing_channel(self) -> AbstractChannel:
        async with self._opening:
            if self._publisher is None:
                channel = await (await self._open()).channel(publisher_confirms=True)
                await self._declare(channel)
                self._publisher = channel
            return self._publisher

    async def _open(self) -> AbstractRobustConnection:
        """The connection, opened if need be (under `_opening`)."""
        if self._connection is None:
            self._connection = await open_robust_connection(
                self._url, reconnect_interval=self._reconnect_interval, timeout=self._timeout
            )
        return self._connection

    async def _declare(self, channel: AbstractChannel) -> AbstractQueue:
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
