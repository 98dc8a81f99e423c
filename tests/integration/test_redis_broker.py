"""The Redis broker in this process: what the contract suite cannot see from outside."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import anyio
import pytest
from redis.asyncio import Redis
from servers import RedisServer, free_ports

from taskq import TaskQ, group, signature
from taskq.brokers.base import Broker, Delivery, create_broker
from taskq.brokers.redis import BANDS
from taskq.config import Settings
from taskq.message import Message, decode, encode

pytestmark = pytest.mark.integration


@pytest.fixture
def url(redis_server: RedisServer) -> str:
    return f"{redis_server.url}?prefix=t{uuid.uuid4().hex[:12]}:"


@pytest.fixture
async def open_broker(url: str) -> AsyncIterator[Any]:
    opened: list[Broker] = []

    async def open_(visibility_timeout: float = 60.0) -> Broker:
        conf = Settings(broker_transport_options={"visibility_timeout": visibility_timeout})
        broker = create_broker(url, conf)
        await broker.connect()
        opened.append(broker)
        return broker

    yield open_
    for broker in opened:
        await broker.close()


def message(**fields: Any) -> Message:
    return Message(id=uuid.uuid4().hex, task="tests.work", **fields)


def task_id(delivery: Delivery) -> str:
    return decode(delivery.body, {"json"}).id


async def test_ten_thousand_messages_take_a_handful_of_round_trips(
    open_broker: Any, round_trips: list[int]
) -> None:
    broker = await open_broker()
    messages = [message() for _ in range(10_000)]
    round_trips[0] = 0
    await broker.publish_many([(m, "q") for m in messages])
    assert round_trips[0] == 1
    assert await broker.queue_length("q") == 10_000

    round_trips[0] = 0
    seen: set[str] = set()
    consumer = broker.consume(["q"], 1000)
    async with anyio.create_task_group() as tg:
        async for delivery in consumer:
            seen.add(task_id(delivery))
            tg.start_soon(delivery.ack)
            if len(seen) == len(messages):
                break
    await consumer.aclose()
    assert seen == {m.id for m in messages}
    assert await broker.queue_length("q") == 0
    # Claims come in batches of the free prefetch and the acks of one loop turn share a
    # round trip: far fewer than one per message.
    assert round_trips[0] < 200, round_trips[0]


async def test_a_group_of_ten_thousand_takes_two_round_trips(
    url: str, round_trips: list[int]
) -> None:
    async with TaskQ("producer", broker=url) as app:
        await app.connected_store()
        signatures = [signature("tests.work", [n], app=app) for n in range(10_000)]
        round_trips[0] = 0
        await group(signatures).apply_async()
        assert round_trips[0] == 2  # the group's record in the store, then every message
        assert await (await app.connected_broker()).queue_length("default") == 10_000


async def test_a_blocked_event_loop_does_not_redeliver_its_own_running_tasks(
    open_broker: Any,
) -> None:
    visibility = 0.4
    broker = await open_broker(visibility_timeout=visibility)
    await broker.publish(message(), "q")
    received: list[Delivery] = []
    first = anyio.Event()

    async def consume() -> None:
        async for delivery in broker.consume(["q"], 10):
            received.append(delivery)
            first.set()

    async def renew() -> None:  # what the worker does for every delivery it holds
        while True:
            await anyio.sleep(visibility / 4)
            for delivery in received:
                await delivery.extend(visibility)

    async with anyio.create_task_group() as tg:
        tg.start_soon(consume)
        tg.start_soon(renew)
        with anyio.fail_after(5):
            await first.wait()
        time.sleep(3 * visibility)  # noqa: ASYNC251 - a task that blocks the event loop
        await anyio.sleep(4 * visibility)
        tg.cancel_scope.cancel()
    assert len(received) == 1
    await received[0].ack()
    assert await broker.queue_length("q") == 0


async def test_due_messages_move_once_with_racing_consumers(open_broker: Any) -> None:
    brokers = [await open_broker() for _ in range(3)]
    eta = time.time() + 0.3
    messages = [message(eta=eta) for _ in range(300)]
    await brokers[0].publish_many([(m, "q") for m in messages])
    seen: list[str] = []
    all_seen = anyio.Event()

    async def drain(broker: Broker) -> None:
        async for delivery in broker.consume(["q"], 50):
            seen.append(task_id(delivery))
            await delivery.ack()
            if len(seen) >= len(messages):
                all_seen.set()

    with anyio.move_on_after(3):
        async with anyio.create_task_group() as tg:
            for broker in brokers:
                tg.start_soon(drain, broker)
            await all_seen.wait()
            await anyio.sleep(0.3)  # anything delivered twice would show up by now
            tg.cancel_scope.cancel()
    assert sorted(seen) == sorted(m.id for m in messages)
    assert await brokers[0].queue_length("q") == 0


async def test_a_consumer_takes_over_the_expired_leases_of_a_dead_one(open_broker: Any) -> None:
    dead, alive = await open_broker(visibility_timeout=0.3), await open_broker()
    await dead.publish_many([(message(), "q") for _ in range(3)])
    abandoned = dead.consume(["q"], 3)
    first = await anext(abandoned)  # it claimed all three, then "died": nothing settles them
    taken: list[Delivery] = []
    with anyio.fail_after(5):
        async for delivery in alive.consume(["q"], 10):
            taken.append(delivery)
            if len(taken) == 3:
                break
    assert task_id(first) in {task_id(d) for d in taken}
    assert all(d.delivery_count == 2 for d in taken)
    await first.ack()  # stale: the message is the other consumer's now
    await abandoned.aclose()  # gives back the two it never yielded: stale too
    assert await alive.queue_length("q") == 3
    for delivery in taken:
        await delivery.ack()
    assert await alive.queue_length("q") == 0


async def test_malformed_entries_in_the_queues_own_keys_become_dead_letters(
    open_broker: Any,
) -> None:
    """Entries written into the queue's keys by hand: each is dead-lettered with its raw
    fields and the reason by the claim that meets it, and the good messages are delivered."""
    broker = await open_broker()
    good = [message() for _ in range(3)]
    await broker.publish_many([(m, "q") for m in good])
    keys, client = broker.keys("q"), broker.connection.client
    envelope = encode(message())
    await client.xadd(keys.stream(0), {"x": "y"})  # no envelope
    await client.xadd(keys.stream(5), {"b": envelope, "d": "many"})  # no delivery count
    await client.zadd(keys.delayed, {"garbage": 0, b"x0:token:" + envelope: 0})  # bad member
    await client.zadd(keys.keys[BANDS + 1], {"zz": 0, "7not-an-id": 0})  # bad leases
    delivered = []
    async with aclosing(broker.consume(["q"], 100)) as consumer:
        async for delivery in consumer:
            delivered.append(task_id(delivery))
            await delivery.ack()
            if len(delivered) == len(good):
                break
    assert sorted(delivered) == sorted(m.id for m in good)
    letters = await broker.dead_letters("q")
    assert len(letters) == 6
    assert all(letter.reason.startswith("malformed broker entry: ") for letter in letters)
    bodies = {letter.body for letter in letters}
    assert {envelope, b"garbage", b"x0:token:" + envelope, b"zz", b"7not-an-id"} <= bodies
    assert await broker.queue_length("q") == 0


async def test_a_queue_whose_keys_redis_refuses_does_not_stop_the_others(
    open_broker: Any, caplog: pytest.LogCaptureFixture
) -> None:
    broker = await open_broker()
    await broker.connection.client.set(broker.keys("broken").stream(3), "not a stream")
    sent = message()
    await broker.publish(sent, "fine")
    async with aclosing(broker.consume(["broken", "fine"], 10)) as consumer:
        delivery = await anext(consumer)
        assert task_id(delivery) == sent.id
        await delivery.ack()
    assert "Cannot claim from queue 'broken': Redis refused (WRONGTYPE" in caplog.text


async def test_a_consumer_whose_pub_sub_is_unreachable_polls_instead(
    open_broker: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Wake-ups that cannot be subscribed to (the node they were on is gone) do not stop
    claiming: the consumer polls until it can subscribe again."""
    broker = await open_broker()
    [closed] = free_ports(1)
    nowhere = Redis(host="127.0.0.1", port=closed)
    monkeypatch.setattr(broker.connection, "pubsub", nowhere.pubsub)
    await broker.publish(message(), "q")
    async with aclosing(broker.consume(["q"], 10)) as consumer:
        with anyio.fail_after(5):
            await (await anext(consumer)).ack()
            later = message()
            await broker.publish(later, "q")  # while the consumer sleeps, unwoken
            delivery = await anext(consumer)
    assert task_id(delivery) == later.id
    await nowhere.aclose()
