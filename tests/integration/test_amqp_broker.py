"""The AMQP broker against the session's RabbitMQ node, below the worker: publisher confirms,
routing, the eta check of the consumer, quorum delivery counts, and dropped connections."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aio_pika
import anyio
import pytest
from servers import RabbitMQServer, free_ports
from support import eventually

from taskq import TaskQ
from taskq.brokers.amqp_consumer import ETA_HEADER
from taskq.brokers.amqp_topology import bucket_queue, bucket_ttls
from taskq.brokers.base import Broker, Delivery, create_broker
from taskq.config import Settings
from taskq.errors import BrokerUnavailable, ConfigurationError
from taskq.message import Message, decode, encode

pytestmark = pytest.mark.integration

OpenBroker = Callable[..., Awaitable[Broker]]


@pytest.fixture
def queue() -> str:
    return f"broker-{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def open_broker(rabbitmq_server: RabbitMQServer) -> AsyncIterator[OpenBroker]:
    """Connected brokers (each its own connection), closed after the test."""
    opened: list[Broker] = []

    async def open_(**transport: object) -> Broker:
        conf = Settings(broker_transport_options=dict(transport))
        broker = create_broker(rabbitmq_server.url, conf)
        await broker.connect()
        opened.append(broker)
        return broker

    yield open_
    for broker in opened:
        await broker.close()


def new_message(**fields: object) -> Message:
    return Message(id=uuid.uuid4().hex, task="tests.work", **fields)  # type: ignore[arg-type]


async def test_a_publish_returns_once_rabbitmq_has_the_message(
    open_broker: OpenBroker, queue: str
) -> None:
    producer, observer = await open_broker(), await open_broker()
    await producer.publish(new_message(), queue)
    assert await observer.queue_length(queue) == 1  # confirmed: no waiting, no polling
    await producer.publish_many([(new_message(), queue) for _ in range(300)])
    assert await observer.queue_length(queue) == 301


async def test_an_unroutable_publish_raises(open_broker: OpenBroker, queue: str) -> None:
    broker = await open_broker()
    lost = new_message(exchange=f"{queue}.nowhere", routing_key="no.queue.bound")
    with pytest.raises(ConfigurationError, match="could route no message"):
        await broker.publish(lost, queue)
    assert await broker.queue_length(queue) == 0


async def test_publishes_in_flight_together_are_confirmed_each_and_only_the_unroutable_raises(
    open_broker: OpenBroker, queue: str
) -> None:
    """A basic.return is matched to its own publish among the many awaiting their confirms."""
    producer, observer = await open_broker(), await open_broker()
    await producer.publish(new_message(), queue)  # the queue declared before the crowd
    lost = new_message(exchange=f"{queue}.nowhere", routing_key="no.queue.bound")
    calls = [producer.publish(new_message(), queue) for _ in range(150)]
    calls.insert(70, producer.publish(lost, queue))
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    failed = [n for n, outcome in enumerate(outcomes) if outcome is not None]
    assert failed == [70] and isinstance(outcomes[70], ConfigurationError)
    assert await observer.queue_length(queue) == 151


async def test_publishes_in_flight_when_the_connection_drops_raise_or_are_confirmed(
    open_broker: OpenBroker, queue: str, rabbitmq_server: RabbitMQServer
) -> None:
    """None waits for ever, none is lost though it returned, and once the robust connection is
    back the publishes are confirmed again."""
    producer, observer = await open_broker(), await open_broker()
    await observer.queue_length(queue)
    dropped = anyio.Event()
    rounds: list[list[BaseException | None]] = []

    async def publish_through_the_drop() -> None:
        while not dropped.is_set() or len(rounds) < 3:
            calls = (producer.publish(new_message(), queue) for _ in range(100))
            rounds.append(await asyncio.gather(*calls, return_exceptions=True))
            if not dropped.is_set():
                rounds.clear()  # only the rounds from the drop on are counted

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            tg.start_soon(publish_through_the_drop)
            await anyio.to_thread.run_sync(
                rabbitmq_server.ctl, "close_all_connections", "test: a network failure"
            )
            dropped.set()
    outcomes = [outcome for round_ in rounds for outcome in round_]
    assert all(isinstance(o, ConnectionError) for o in outcomes if o is not None), outcomes
    assert rounds[-1] == [None] * 100  # reconnected: all confirmed
    with anyio.fail_after(30):
        assert await observer.queue_length(queue) >= outcomes.count(None)


async def test_a_publish_rabbitmq_refuses_raises(open_broker: OpenBroker, queue: str) -> None:
    """A full queue that rejects publishes nacks them."""
    full = {queue: {"x-max-length": 1, "x-overflow": "reject-publish"}}
    broker = await open_broker(queue_arguments=full)
    await broker.publish(new_message(), queue)
    with pytest.raises(ConnectionError, match="refused the message"):
        await broker.publish(new_message(), queue)
    with pytest.raises(ConnectionError, match="refused the message"):
        await broker.publish_many([(new_message(), queue) for _ in range(3)])
    assert await broker.queue_length(queue) == 1


async def test_a_message_larger_than_a_frame_arrives_whole(
    open_broker: OpenBroker, queue: str
) -> None:
    broker = await open_broker()
    message = new_message(args=["x" * 400_000])  # RabbitMQ's frames are 128 KiB
    await broker.publish(message, queue)
    consumer = broker.consume([queue], 10)
    with anyio.fail_after(10):
        delivery = await anext(consumer)
    assert decode(delivery.body, {"json"}).args == message.args
    await delivery.ack()
    await consumer.aclose()


async def test_an_early_message_is_parked_until_due(
    open_broker: OpenBroker, queue: str, rabbitmq_server: RabbitMQServer
) -> None:
    """A message back from its bucket too soon (here: put straight into the queue) waits on
    RabbitMQ again, not in the consumer, and is yielded only once due."""
    broker = await open_broker()
    await broker.queue_length(queue)  # declares the queue and its buckets
    message = new_message()
    due_ms = int((time.time() + 1.5) * 1000)  # the header's precision
    received: list[tuple[float, Delivery]] = []
    consumer = broker.consume([queue], 10)

    async def receive() -> None:
        delivery = await anext(consumer)
        received.append((time.time(), delivery))

    async with await aio_pika.connect(rabbitmq_server.url) as connection:
        channel = await connection.channel()
        buckets = [bucket_queue(queue, ttl) for ttl in bucket_ttls()]
        early = aio_pika.Message(encode(message), headers={ETA_HEADER: due_ms})
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(receive)
                await channel.default_exchange.publish(early, routing_key=queue)
                await eventually(lambda: _is(_ready(channel, buckets), 1))
                assert not received and await _ready(channel, [queue]) == 0
    [(when, delivery)] = received
    assert when >= due_ms / 1000 and task_id(delivery) == message.id
    assert delivery.delivery_count == 1
    await delivery.ack()
    await consumer.aclose()


async def test_quorum_queues_count_deliveries(open_broker: OpenBroker, queue: str) -> None:
    broker = await open_broker(quorum_queues=[queue])
    await broker.publish(new_message(), queue)
    consumer = broker.consume([queue], 10)
    with anyio.fail_after(10):
        await (await anext(consumer)).nack()
        again = await anext(consumer)
    assert again.delivery_count == 2
    await again.nack(delay=0.2)
    with anyio.fail_after(10):
        third = await anext(consumer)
    assert third.delivery_count == 3
    await third.ack()
    await consumer.aclose()


async def test_a_quorum_queues_dead_letters_and_delays_are_quorum_queues_too(
    open_broker: OpenBroker, queue: str, rabbitmq_server: RabbitMQServer
) -> None:
    """So that each of them survives the loss of a node of a cluster, as the queue does."""
    broker = await open_broker(quorum_queues=[queue])
    await broker.publish(new_message(eta=time.time() + 0.3), queue)
    await broker.add_dead_letter(queue, encode(new_message()), "test: poison")
    consumer = broker.consume([queue], 10)
    with anyio.fail_after(10):
        await (await anext(consumer)).ack()  # back from its (quorum) bucket
    await consumer.aclose()
    assert await broker.dead_letter_length(queue) == 1
    listed = rabbitmq_server.ctl("list_queues", "name", "type", "--no-table-headers", "-q")
    types = dict(line.split() for line in listed.splitlines() if line.startswith(queue))
    assert types[queue] == types[f"{queue}.dlq"] == "quorum"
    buckets = {name: kind for name, kind in types.items() if ".delay." in name}
    assert buckets and set(buckets.values()) == {"quorum"}


async def test_a_fail_over_list_connects_to_the_first_node_that_answers(
    rabbitmq_server: RabbitMQServer, queue: str
) -> None:
    closed, other = free_ports(2)
    dead = f"amqp://guest:guest@127.0.0.1:{closed}/"
    broker = create_broker(f"{dead};{rabbitmq_server.url}", Settings())
    await broker.connect()
    try:
        await broker.publish(new_message(), queue)
        assert await broker.queue_length(queue) == 1
    finally:
        await broker.close()
    nowhere = create_broker(f"{dead};amqp://127.0.0.1:{other}/", Settings())
    expected = rf"RabbitMQ at amqp://guest:\*\*\*@127.0.0.1:{closed}/;amqp://127.0.0.1:{other}/ is"
    with pytest.raises(BrokerUnavailable, match=expected):
        await nowhere.connect()


async def test_a_dropped_connection_gives_back_what_the_consumer_held(
    open_broker: OpenBroker, queue: str, rabbitmq_server: RabbitMQServer
) -> None:
    broker = await open_broker()
    message = new_message()
    await broker.publish(message, queue)
    consumer = broker.consume([queue], 10)
    with anyio.fail_after(10):
        held = await anext(consumer)
    rabbitmq_server.ctl("close_all_connections", "test: a network failure")
    await held.ack()  # its channel is gone: a no-op, RabbitMQ has the message back
    with anyio.fail_after(20):  # the robust connection reconnects and consumes again
        again = await anext(consumer)
    assert task_id(again) == message.id and again.delivery_count == 2
    await again.ack()
    await consumer.aclose()
    assert await broker.queue_length(queue) == 0


def test_routes_carry_exchange_and_routing_key_in_the_envelope() -> None:
    app = TaskQ(
        "routes",
        broker="memory://routes",
        task_routes={"shop.*": {"exchange": "orders", "routing_key": "order.eu", "queue": "eu"}},
    )
    routed, plain = app.build_message("shop.pay"), app.build_message("other.task")
    assert (routed.exchange, routed.routing_key, routed.queue) == ("orders", "order.eu", "eu")
    assert (plain.exchange, plain.routing_key) == (None, None)
    again = decode(encode(routed), {"json"})
    assert (again.exchange, again.routing_key) == ("orders", "order.eu")


def task_id(delivery: Delivery) -> str:
    return decode(delivery.body, {"json"}).id


async def _is(value: Awaitable[Any], expected: Any) -> bool:
    return bool(await value == expected)


async def _ready(channel: aio_pika.abc.AbstractChannel, names: list[str]) -> int:
    counts = [(await channel.declare_queue(n, passive=True)).declaration_result for n in names]
    return sum(result.message_count or 0 for result in counts)
