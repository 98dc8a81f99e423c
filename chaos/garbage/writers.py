"""Writing raw bytes where a broker keeps its messages, past every check a producer makes:
the Redis broker's band streams, the SQLite broker's table, a RabbitMQ queue."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

import aio_pika
import anyio
import redis.asyncio
from redis.typing import EncodableT, FieldT

from taskq.brokers.redis import QueueKeys
from taskq.redis_db import RedisSettings

SQLITE_BUSY_TIMEOUT = 30.0
INSERT = "INSERT INTO taskq_messages (queue, priority, available_at, body) VALUES (?, ?, ?, ?)"


class RawWriter(Protocol):
    async def write(self, bodies: Sequence[bytes]) -> None:
        """Put these bodies into the queue as they are, ready now."""
        ...


class RedisWriter:
    """XADD to the queue's priority-0 stream (field `b`, as the broker's own publish does),
    then a wake-up on the queue's channel."""

    def __init__(self, url: str, queue: str) -> None:
        self.url = url
        self.keys = QueueKeys(RedisSettings.parse(url, {}).prefix, queue)

    async def write(self, bodies: Sequence[bytes]) -> None:
        await self.write_fields([{"b": body} for body in bodies])

    async def write_fields(
        self, entries: Sequence[Mapping[str, bytes | str]], band: int = 0
    ) -> None:
        """Stream entries with exactly these fields."""
        async with (
            redis.asyncio.Redis.from_url(self.url) as client,
            client.pipeline(transaction=False) as pipe,
        ):
            for entry in entries:
                fields: dict[FieldT, EncodableT] = {name: value for name, value in entry.items()}
                pipe.xadd(self.keys.stream(band), fields)
            pipe.publish(self.keys.channel, "1")
            await pipe.execute()


class SQLiteWriter:
    """INSERT INTO taskq_messages, in a thread, waiting out the workers' write locks."""

    def __init__(self, path: Path, queue: str) -> None:
        self.path = path
        self.queue = queue

    async def write(self, bodies: Sequence[bytes]) -> None:
        now = time.time()
        await self.write_rows([(self.queue, 0, now, body) for body in bodies])

    async def write_rows(self, rows: Sequence[tuple[object, object, object, object]]) -> None:
        """Rows of (queue, priority, available_at, body), whatever their types."""
        await anyio.to_thread.run_sync(self._insert, list(rows))

    def _insert(self, rows: list[tuple[object, object, object, object]]) -> None:
        connection = sqlite3.connect(self.path, timeout=SQLITE_BUSY_TIMEOUT)
        try:
            with connection:
                connection.executemany(INSERT, rows)
        finally:
            connection.close()


class RabbitMQWriter:
    """A persistent, confirmed publish of each body to the default exchange, routed by the
    queue's name (which the worker has declared)."""

    def __init__(self, url: str, queue: str, exchange: str = "taskq") -> None:
        self.url = url
        self.queue = queue
        self.exchange = exchange

    async def write(self, bodies: Sequence[bytes]) -> None:
        connection = await aio_pika.connect(self.url)
        async with connection:
            channel = await connection.channel(publisher_confirms=True)
            exchange = await channel.get_exchange(self.exchange)
            for body in bodies:
                message = aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
                await exchange.publish(message, routing_key=self.queue, mandatory=True)
