"""Bytes written straight where a broker keeps a queue's messages, past every check a
producer makes: what a hostile or broken producer with access to the broker could leave there.
Batched (one transaction, pipeline or confirm window per call), so thousands are quick."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from functools import partial

import aio_pika
import anyio

from taskq.brokers.base import Broker
from taskq.brokers.redis import QueueKeys, RedisBroker


async def publish_raw(
    kind: str, broker: Broker, broker_url: str, prefix: str, queue: str, bodies: Sequence[bytes]
) -> None:
    """Put `bodies` into `queue` of the broker of `kind` (sqlite, redis, redis-cluster, amqp)."""
    if kind == "sqlite":
        with sqlite3.connect(broker_url.removeprefix("sqlite:///")) as db:
            sql = "INSERT INTO taskq_messages (queue, body) VALUES (?, ?)"
            db.executemany(sql, [(queue, body) for body in bodies])
    elif kind in ("redis", "redis-cluster"):
        assert isinstance(broker, RedisBroker)
        keys, client = QueueKeys(prefix, queue), broker.connection.client
        async with client.pipeline(transaction=False) as pipe:
            for body in bodies:
                pipe.xadd(keys.stream(0), {"b": body})  # the field of the broker's publish
            await pipe.execute()
        await client.publish(keys.channel, "1")
    else:
        connection = await aio_pika.connect(broker_url)
        async with connection:
            channel = await connection.channel(publisher_confirms=True)
            exchange = await channel.get_exchange("taskq")
            async with anyio.create_task_group() as confirms:  # awaited together
                for body in bodies:
                    message = aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
                    confirms.start_soon(partial(exchange.publish, message, queue, mandatory=True))
