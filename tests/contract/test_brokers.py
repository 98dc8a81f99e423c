"""The broker contract: every broker passes this suite before anything else.

The suite is parametrised over `BROKERS`; a new broker is one more entry there. An
entry's factory gets the pytest request (to ask for a server fixture) and a fresh
temporary directory, and returns the broker URL for one test.
"""

from __future__ import annotations

import math
import sqlite3
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import pytest
from anyio.streams.memory import MemoryObjectReceiveStream
from servers import RabbitMQServer

from taskq.brokers.base import Broker, Delivery, create_broker
from taskq.brokers.redis import RedisBroker
from taskq.config import Settings
from taskq.errors import MessageTooLargeError, UnsupportedError
from taskq.message import Message, decode, encode

UrlFactory = Callable[[pytest.FixtureRequest, Path], str]
OpenBroker = Callable[..., Awaitable[Broker]]
Deliveries = MemoryObjectReceiveStream[Delivery]


def memory_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return f"memory://{uuid.uuid4().hex}"


def sqlite_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'broker.db'}"


def amqp_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The session's RabbitMQ node: `open_broker` empties the suite's queues first."""
    server: RabbitMQServer = request.getfixturevalue("rabbitmq_server")
    return server.url


def redis_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The session's Redis, with a key prefix of the test's own."""
    return f"{request.getfixturevalue('redis_server').url}?prefix=t{uuid.uuid4().hex[:12]}:"


def redis_cluster_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The session's three-master Redis Cluster, with a key prefix of the test's own."""
    cluster = request.getfixturevalue("redis_cluster")
    return f"{cluster.url}?cluster=true&prefix=t{uuid.uuid4().hex[:12]}:"


BROKERS = [
    pytest.param(memory_url, id="memory"),
    pytest.param(sqlite_url, id="sqlite"),
    pytest.param(redis_url, id="redis"),
    pytest.param(redis_cluster_url, id="redis-cluster"),
    pytest.param(amqp_url, id="amqp"),
]

sqlite_only = pytest.mark.parametrize("broker_url", [sqlite_url], indirect=True, ids=["sqlite"])
# RabbitMQ has no leases to expire or renew: an unacked message belongs to its consumer's
# channel until it is settled or the channel closes (the worker died), so these do not apply.
lease_brokers = pytest.mark.parametrize(
    "broker_url", [p for p in BROKERS if p.id != "amqp"], indirect=True
)
# Settings a broker needs for the whole suite: AMQP priorities need priority queues.
SETTINGS: dict[str, dict[str, Any]] = {"amqp": {"task_queue_max_priority": 9}}
# The queues the suite uses; a server shared between tests is emptied of them before each.
SUITE_QUEUES = ("q", "a", "b", "c", "other")


@pytest.fixture(params=BROKERS)
def broker_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    factory: UrlFactory = request.param
    return factory(request, tmp_path)


@pytest.fixture
async def open_broker(broker_url: str) -> AsyncIterator[OpenBroker]:
    """Opens connected brokers on the test's URL (so they share state); closes them after."""
    opened: list[Broker] = []

    scheme = broker_url.split(":", 1)[0]

    async def open_(
        *,
        max_message_bytes: int | None = None,
        transport: dict[str, Any] | None = None,
        **common: Any,
    ) -> Broker:
        conf = Settings(**SETTINGS.get(scheme, {}))
        conf.broker_transport_options = {**common, **(transport or {})}
        if max_message_bytes is not None:
            conf.task_max_message_bytes = max_message_bytes
        broker = create_broker(broker_url, conf)
        await broker.connect()
        opened.append(broker)
        return broker

    if scheme == "amqp":
        cleaner = await open_()
        for queue in SUITE_QUEUES:
            await cleaner.purge(queue)
            await cleaner.purge_dead_letters(queue)
    yield open_
    for broker in opened:
        await broker.close()


@pytest.fixture
async def broker(open_broker: OpenBroker) -> Broker:
    return await open_broker()


def new_message(**fields: Any) -> Message:
    return Message(id=uuid.uuid4().hex, task="tests.work", **fields)


def task_id(delivery: Delivery) -> str:
    return decode(delivery.body, {"json"}).id


@asynccontextmanager
async def consuming(
    broker: Broker, queues: Sequence[str] = ("q",), prefetch: int = 10
) -> AsyncIterator[Deliveries]:
    """Consume in a background task; the test reads the deliveries from a stream."""
    send, receive = anyio.create_memory_object_stream[Delivery](math.inf)

    async def pump() -> None:
        consumer = broker.consume(list(queues), prefetch)
        try:
            async for delivery in consumer:
                send.send_nowait(delivery)
        finally:
            await consumer.aclose()

    async with anyio.create_task_group() as tg:
        tg.start_soon(pump)
        yield receive
        tg.cancel_scope.cancel()


async def expect(deliveries: Deliveries, timeout: float = 5.0) -> Delivery:
    with anyio.fail_after(timeout):
        return await deliveries.receive()


async def expect_nothing(deliveries: Deliveries, seconds: float) -> None:
    with anyio.move_on_after(seconds):
        delivery = await deliveries.receive()
        pytest.fail(f"unexpected delivery of {task_id(delivery)} (#{delivery.delivery_count})")


async def test_publish_consume_ack(broker: Broker) -> None:
    message = new_message(args=[1, 2])
    await broker.publish(message, "q")
    assert await broker.queue_length("q") == 1
    async with consuming(broker) as deliveries:
        delivery = await expect(deliveries)
        assert isinstance(delivery, Delivery)
        assert (delivery.queue, delivery.delivery_count) == ("q", 1)
        assert delivery.body == encode(message)
        assert decode(delivery.body, {"json"}).args == [1, 2]
        received = decode(delivery.body, {"json"})
        assert (received.id, received.args) == (message.id, [1, 2])
        assert await broker.queue_length("q") == 1  # leased still counts
        await delivery.ack()
        assert await broker.queue_length("q") == 0


async def test_ack_removes_for_good(open_broker: OpenBroker) -> None:
    broker = await open_broker(visibility_timeout=0.3)
    await broker.publish(new_message(), "q")
    async with consuming(broker) as deliveries:
        await (await expect(deliveries)).ack()
        await expect_nothing(deliveries, 0.8)
    assert await broker.queue_length("q") == 0


async def test_settling_twice_is_a_noop(broker: Broker) -> None:
    first, second = new_message(), new_message()
    await broker.publish_many([(first, "q"), (second, "q")])
    async with consuming(broker) as deliveries:
        done, requeued = await expect(deliveries), await expect(deliveries)
        await done.ack()
        await done.ack()
        await done.nack()
        await done.dead_letter("late")
        await requeued.nack()
        await requeued.nack()
        again = await expect(deliveries)
        assert (task_id(again), again.delivery_count) == (second.id, 2)
        assert await broker.queue_length("q") == 1
        assert await broker.dead_letter_length("q") == 0
        await again.ack()


async def test_nack_requeues(broker: Broker) -> None:
    message = new_message()
    await broker.publish(message, "q")
    async with consuming(broker) as deliveries:
        await (await expect(deliveries)).nack()
        again = await expect(deliveries)
        assert (task_id(again), again.delivery_count) == (message.id, 2)
        assert again.body == encode(message)
        await again.ack()


async def test_nack_with_delay(broker: Broker) -> None:
    await broker.publish(new_message(), "q")
    async with consuming(broker) as deliveries:
        await (await expect(deliveries)).nack(delay=0.6)
        started = time.monotonic()
        await expect_nothing(deliveries, 0.3)
        again = await expect(deliveries)
        assert time.monotonic() - started >= 0.5
        assert again.delivery_count == 2
        await again.ack()


@lease_brokers
async def test_unacked_lease_expires(open_broker: OpenBroker) -> None:
    broker = await open_broker(visibility_timeout=0.5)
    message = new_message()
    await broker.publish(message, "q")
    async with consuming(broker) as deliveries:
        first = await expect(deliveries)
        started = time.monotonic()
        again = await expect(deliveries)
        assert time.monotonic() - started >= 0.4
        assert (task_id(again), again.delivery_count) == (message.id, 2)
        assert first.delivery_count == 1
        await again.ack()


@lease_brokers
async def test_extend_keeps_the_lease(open_broker: OpenBroker) -> None:
    broker = await open_broker(visibility_timeout=0.5)
    await broker.publish(new_message(), "q")
    async with consuming(broker) as deliveries:
        delivery = await expect(deliveries)
        await delivery.extend(5)
        await expect_nothing(deliveries, 1.0)
        await delivery.ack()
    assert await broker.queue_length("q") == 0


@lease_brokers
async def test_stale_delivery_cannot_settle_the_new_lease(open_broker: OpenBroker) -> None:
    broker = await open_broker(visibility_timeout=0.3)
    acked, rejected, requeued = new_message(), new_message(), new_message()
    await broker.publish_many([(acked, "q"), (rejected, "q"), (requeued, "q")])
    async with consuming(broker) as deliveries:
        stale = {task_id(d): d for d in [await expect(deliveries) for _ in range(3)]}
        current = {task_id(d): d for d in [await expect(deliveries) for _ in range(3)]}
        for delivery in current.values():
            assert delivery.delivery_count == 2
            await delivery.extend(30)
        await stale[acked.id].extend(0.01)
        await stale[acked.id].ack()
        await stale[rejected.id].nack(requeue=False)
        await stale[requeued.id].nack()
        await expect_nothing(deliveries, 0.3)
        assert await broker.queue_length("q") == 3
        assert await broker.dead_letter_length("q") == 0
        for delivery in current.values():
            await delivery.ack()
    assert await broker.queue_length("q") == 0


async def test_eta_delays_delivery(broker: Broker) -> None:
    eta = time.time() + 0.5
    delayed, immediate = new_message(eta=eta), new_message()
    await broker.publish(delayed, "q")
    await broker.publish(immediate, "q")
    assert await broker.queue_length("q") == 2
    async with consuming(broker) as deliveries:
        assert task_id(await expect(deliveries)) == immediate.id
        await expect_nothing(deliveries, 0.25)
        delivery = await expect(deliveries)
        assert task_id(delivery) == delayed.id
        assert time.time() >= eta - 0.05


async def test_scheduled_length_counts_what_is_not_due(broker: Broker) -> None:
    await broker.publish(new_message(eta=time.time() + 30), "q")
    await broker.publish(new_message(), "q")
    assert await broker.scheduled_length("q") == 1
    async with consuming(broker) as deliveries:
        await (await expect(deliveries)).nack(delay=30)
    assert (await broker.scheduled_length("q"), await broker.queue_length("q")) == (2, 2)
    assert await broker.scheduled_length("other") == 0


async def test_priorities_then_fifo(broker: Broker) -> None:
    priorities = [0, 5, None, 9, 5]
    messages = [new_message(priority=p) for p in priorities]
    for message in messages:
        await broker.publish(message, "q")
    async with consuming(broker) as deliveries:
        received = [task_id(await expect(deliveries)) for _ in messages]
    expected = [messages[i].id for i in (3, 1, 4, 0, 2)]
    assert received == expected


async def test_prefetch_bounds_unsettled_deliveries(broker: Broker) -> None:
    await broker.publish_many([(new_message(), "q") for _ in range(5)])
    async with consuming(broker, prefetch=2) as deliveries:
        held = [await expect(deliveries), await expect(deliveries)]
        await expect_nothing(deliveries, 0.3)
        await held.pop().ack()
        held.append(await expect(deliveries))
        await expect_nothing(deliveries, 0.1)
        for _ in range(2):
            await held.pop(0).ack()
            held.append(await expect(deliveries))
        for delivery in held:
            await delivery.ack()
    assert await broker.queue_length("q") == 0


async def test_consumes_several_queues(broker: Broker) -> None:
    low, high, elsewhere = new_message(), new_message(priority=5), new_message()
    await broker.publish(low, "a")
    await broker.publish(high, "b")
    await broker.publish(elsewhere, "c")
    async with consuming(broker, queues=["a", "b"]) as deliveries:
        first, second = await expect(deliveries), await expect(deliveries)
        received = {(d.queue, task_id(d)) for d in (first, second)}
        assert received == {("b", high.id), ("a", low.id)}
        await expect_nothing(deliveries, 0.2)
    assert await broker.queue_length("c") == 1


# An AMQP consumer per queue: RabbitMQ orders by priority within one queue only.
@lease_brokers
async def test_priority_orders_across_queues(broker: Broker) -> None:
    low, high = new_message(), new_message(priority=5)
    await broker.publish(low, "a")
    await broker.publish(high, "b")
    async with consuming(broker, queues=["a", "b"]) as deliveries:
        first, second = await expect(deliveries), await expect(deliveries)
    assert [(d.queue, task_id(d)) for d in (first, second)] == [("b", high.id), ("a", low.id)]


async def test_queue_length_counts_waiting_delayed_and_leased(broker: Broker) -> None:
    await broker.publish(new_message(), "q")
    await broker.publish(new_message(eta=time.time() + 60), "q")
    async with consuming(broker) as deliveries:
        await expect(deliveries)
        await broker.publish(new_message(), "q")
        assert await broker.queue_length("q") == 3
    assert await broker.queue_length("other") == 0


async def test_scheduled_are_the_messages_not_due_yet(broker: Broker) -> None:
    """Delayed ones, soonest first; not the ready, nor the leased ones."""
    later, sooner = time.time() + 120, time.time() + 60
    delayed = [new_message(eta=later), new_message(eta=sooner)]
    await broker.publish_many([(message, "q") for message in [*delayed, new_message()]])
    async with consuming(broker) as deliveries:
        await expect(deliveries)  # the ready one, leased now
        assert await broker.scheduled_length("q") == 2
    if broker.url.startswith("amqp"):
        with pytest.raises(UnsupportedError, match="scheduled_length"):
            await broker.scheduled("q")
        return
    scheduled = await broker.scheduled("q")
    assert [decode(item.body, {"json"}).id for item in scheduled] == [
        delayed[1].id,
        delayed[0].id,
    ]
    assert [item.due_at for item in scheduled] == pytest.approx([sooner, later], abs=0.01)
    assert len(await broker.scheduled("q", limit=1)) == 1


async def test_purge_keeps_leased_messages(broker: Broker) -> None:
    await broker.publish(new_message(), "other")
    await broker.publish_many([(new_message(), "q") for _ in range(3)])
    await broker.publish(new_message(eta=time.time() + 60), "q")
    async with consuming(broker, prefetch=1) as deliveries:
        leased = await expect(deliveries)
        assert await broker.purge("q") == 3
        assert await broker.queue_length("q") == 1
        await leased.ack()
        await expect_nothing(deliveries, 0.1)
    assert await broker.queue_length("q") == 0
    assert await broker.queue_length("other") == 1
    assert await broker.purge("q") == 0


async def test_dead_letters_keep_reason_and_body(broker: Broker) -> None:
    first, second = new_message(), new_message()
    await broker.publish_many([(first, "q"), (second, "q")])
    started = time.time()
    async with consuming(broker) as deliveries:
        one, two = await expect(deliveries), await expect(deliveries)
        await one.dead_letter("boom")
        await two.dead_letter("bad input")
    letters = await broker.dead_letters("q")
    assert [(d.queue, d.reason, d.body) for d in letters] == [
        ("q", "boom", encode(first)),
        ("q", "bad input", encode(second)),
    ]
    assert all(started - 1 <= d.failed_at <= time.time() + 1 for d in letters)
    assert [d.reason for d in await broker.dead_letters("q", limit=1)] == ["boom"]
    assert await broker.dead_letter_length("q") == 2
    assert await broker.queue_length("q") == 0
    assert await broker.purge_dead_letters("q") == 2
    assert await broker.dead_letter_length("q") == 0
    assert await broker.dead_letters("q") == []


async def test_add_and_remove_dead_letters_by_id(broker: Broker) -> None:
    await broker.add_dead_letter("q", b"first", "retries exhausted")
    await broker.add_dead_letter("q", b"second", "unknown task")
    await broker.add_dead_letter("other", b"elsewhere", "x")
    first, second = await broker.dead_letters("q")
    assert (first.body, first.reason, second.body) == (b"first", "retries exhausted", b"second")
    assert first.id != second.id
    assert await broker.remove_dead_letters("q", [first.id, "no-such-id"]) == 1
    assert [d.body for d in await broker.dead_letters("q")] == [b"second"]
    assert await broker.remove_dead_letters("q", [first.id]) == 0
    assert await broker.dead_letter_length("other") == 1


async def test_nack_without_requeue_dead_letters(broker: Broker) -> None:
    message = new_message()
    await broker.publish(message, "q")
    async with consuming(broker) as deliveries:
        await (await expect(deliveries)).nack(requeue=False)
        await expect_nothing(deliveries, 0.1)
    [letter] = await broker.dead_letters("q")
    assert (letter.reason, letter.body) == ("rejected", encode(message))
    assert await broker.queue_length("q") == 0


async def test_publish_many(broker: Broker) -> None:
    messages = [new_message() for _ in range(3)]
    await broker.publish_many(list(zip(messages, ["a", "b", "a"], strict=True)))
    assert (await broker.queue_length("a"), await broker.queue_length("b")) == (2, 1)
    async with consuming(broker, queues=["a", "b"]) as deliveries:
        received = {task_id(await expect(deliveries)) for _ in messages}
    assert received == {m.id for m in messages}


async def test_message_too_large_enqueues_nothing(open_broker: OpenBroker) -> None:
    broker = await open_broker(max_message_bytes=400)
    big = new_message(args=["x" * 1000])
    with pytest.raises(MessageTooLargeError):
        await broker.publish(big, "q")
    with pytest.raises(MessageTooLargeError):
        await broker.publish_many([(new_message(), "q"), (big, "q")])
    assert await broker.queue_length("q") == 0


async def test_broadcast_reaches_subscribers(broker: Broker) -> None:
    await broker.broadcast("news", b"before")
    subscription = broker.subscribe("news")
    received: list[bytes] = []

    async def read() -> None:
        async for payload in subscription:
            received.append(payload)

    async with anyio.create_task_group() as tg:
        tg.start_soon(read)
        # Sent until two arrive: a broker may establish the subscription asynchronously.
        with anyio.fail_after(5):
            for number in range(1000):
                await broker.broadcast("news", str(number).encode())
                await broker.broadcast("other", b"elsewhere")
                await anyio.sleep(0.02)
                if len(received) >= 2:
                    break
        tg.cancel_scope.cancel()
    if on_a_redis_cluster(broker):
        # The cluster bus carries a PUBLISH to the other nodes asynchronously: one sent just
        # before subscribing on another node may still arrive there (docs/architecture.md).
        received = [payload for payload in received if payload != b"before"]
    assert b"before" not in received
    assert b"elsewhere" not in received
    numbers = [int(payload) for payload in received]
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))


def on_a_redis_cluster(broker: Broker) -> bool:
    return isinstance(broker, RedisBroker) and broker.settings.cluster


async def test_closed_consumer_stops_and_gives_back_unyielded(broker: Broker) -> None:
    await broker.publish_many([(new_message(), "q") for _ in range(3)])
    consumer = broker.consume(["q"], 3)
    with anyio.fail_after(5):
        delivery = await anext(consumer)
    await consumer.aclose()
    await delivery.ack()
    assert await broker.queue_length("q") == 2  # the two never yielded are back, unleased
    async with consuming(broker) as deliveries:
        for _ in range(2):
            await (await expect(deliveries)).ack()
    assert await broker.queue_length("q") == 0


async def test_cancelled_consumer_stops_cleanly(broker: Broker) -> None:
    await broker.publish(new_message(), "q")
    async with consuming(broker) as deliveries:
        delivery = await expect(deliveries)
    await delivery.ack()
    assert await broker.queue_length("q") == 0


async def test_close_is_idempotent(open_broker: OpenBroker) -> None:
    broker = await open_broker()
    await broker.close()
    await broker.close()


async def test_publish_wakes_an_idle_consumer(open_broker: OpenBroker) -> None:
    consumer_side = await open_broker(polling_interval=5.0)
    producer_side = await open_broker()
    async with consuming(consumer_side) as deliveries:
        await anyio.sleep(1.3)  # let the consumer's backoff grow past a second
        await producer_side.publish(new_message(), "q")
        await expect(deliveries, timeout=0.5)


@sqlite_only
async def test_sqlite_is_durable_across_reopen(open_broker: OpenBroker) -> None:
    first = await open_broker()
    message = new_message()
    await first.publish(message, "q")
    await first.close()
    second = await open_broker()
    assert await second.queue_length("q") == 1
    async with consuming(second) as deliveries:
        delivery = await expect(deliveries)
        assert task_id(delivery) == message.id
        await delivery.ack()


@sqlite_only
async def test_sqlite_idle_polls_need_no_write_lock(
    open_broker: OpenBroker, broker_url: str
) -> None:
    """Idle workers poll without taking the write lock, so they cannot hold up a producer
    (or fail while another process writes)."""
    broker = await open_broker(polling_interval=0.01, transport={"busy_timeout": 0.01})
    writer = sqlite3.connect(broker_url.removeprefix("sqlite:///"), isolation_level=None)
    try:
        async with consuming(broker) as deliveries:
            writer.execute("BEGIN IMMEDIATE")  # another process in the middle of a write
            await expect_nothing(deliveries, 0.5)  # many polls, none failing on the lock
            writer.execute("COMMIT")
            message = new_message()
            await broker.publish(message, "q")
            delivery = await expect(deliveries)
            assert task_id(delivery) == message.id
            await delivery.ack()
    finally:
        writer.close()


_PUBLISH_FROM_CHILD = """
import asyncio, sys
from taskq.brokers.base import create_broker
from taskq.message import Message

async def main():
    broker = create_broker(sys.argv[1])
    await broker.connect()
    await broker.publish(Message(id="from-child", task="tests.work"), "q")
    await broker.close()

asyncio.run(main())
"""


@sqlite_only
async def test_sqlite_consumes_what_another_process_published(
    broker: Broker, broker_url: str
) -> None:
    async with consuming(broker) as deliveries:
        await anyio.run_process([sys.executable, "-c", _PUBLISH_FROM_CHILD, broker_url])
        delivery = await expect(deliveries, timeout=10)
        assert task_id(delivery) == "from-child"
        await delivery.ack()


@sqlite_only
async def test_sqlite_claims_are_atomic_across_connections(open_broker: OpenBroker) -> None:
    brokers = [await open_broker() for _ in range(4)]
    messages = [new_message() for _ in range(200)]
    await brokers[0].publish_many([(m, "q") for m in messages])
    seen: list[list[str]] = [[] for _ in brokers]

    async def drain(index: int, tg: anyio.abc.TaskGroup) -> None:
        consumer = brokers[index].consume(["q"], 3)
        try:
            async for delivery in consumer:
                seen[index].append(task_id(delivery))
                await delivery.ack()
                if sum(map(len, seen)) >= len(messages):
                    tg.cancel_scope.cancel()
        finally:
            await consumer.aclose()

    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            for index in range(len(brokers)):
                tg.start_soon(drain, index, tg)
    everything = [task_id for ids in seen for task_id in ids]
    assert sorted(everything) == sorted(m.id for m in messages)  # each exactly once


@sqlite_only
async def test_sqlite_malformed_rows_become_dead_letters(
    open_broker: OpenBroker, broker_url: str
) -> None:
    """Rows written into taskq_messages by hand, with a TEXT priority, a TEXT available_at
    or a TEXT body: each is dead-lettered with the reason, and the good message delivered."""
    broker = await open_broker(polling_interval=0.01)
    good = new_message()
    await broker.publish(good, "q")
    body = encode(new_message())
    writer = sqlite3.connect(broker_url.removeprefix("sqlite:///"), isolation_level=None)
    insert = "INSERT INTO taskq_messages (queue, priority, available_at, body) VALUES (?, ?, ?, ?)"
    try:
        writer.execute(insert, ("q", "high", time.time(), body))
        writer.execute(insert, ("q", 0, "soon", body))
        writer.execute(insert, ("q", 0, time.time(), body.decode()))
    finally:
        writer.close()
    async with consuming(broker) as deliveries:
        delivery = await expect(deliveries)
        assert task_id(delivery) == good.id
        await delivery.ack()
        with anyio.fail_after(5):  # the row due at no time is met once nothing else is left
            while await broker.dead_letter_length("q") < 3:  # noqa: ASYNC110
                await anyio.sleep(0.01)
    letters = await broker.dead_letters("q")
    assert sorted(letter.reason for letter in letters) == [
        "malformed broker entry: available_at 'soon' is not a time",
        "malformed broker entry: body is str, not a BLOB",
        "malformed broker entry: priority 'high' is not an integer",
    ]
    assert {letter.body for letter in letters} == {body}
    assert await broker.queue_length("q") == 0
