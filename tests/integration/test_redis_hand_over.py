"""Hand-overs on Redis: a publish gives its message to a consumer that offered to take it
(one that found its queue empty, or whose acks left it holding nothing), leased, over the
consumer's own pub/sub channel, so an idle worker does not claim each message."""

from __future__ import annotations

import os
import signal
import socket
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import aclosing
from pathlib import Path
from typing import Any

import anyio
import pytest
from redis.exceptions import ResponseError
from servers import RedisServer
from support import WorkerProcess, eventually, worker_environment

from taskq.brokers.base import Broker, Delivery, create_broker
from taskq.brokers.redis import BANDS
from taskq.config import Settings
from taskq.message import Message, decode

pytestmark = pytest.mark.integration


@pytest.fixture
def url(redis_server: RedisServer) -> str:
    return f"{redis_server.url}?prefix=t{uuid.uuid4().hex[:12]}:"


@pytest.fixture
async def broker(url: str) -> AsyncIterator[Any]:
    conf = Settings(broker_transport_options={"visibility_timeout": 3600})
    opened = create_broker(url, conf)
    await opened.connect()
    yield opened
    await opened.close()


def message(**fields: Any) -> Message:
    return Message(id=uuid.uuid4().hex, task="tests.work", **fields)


def task_id(delivery: Delivery) -> str:
    return decode(delivery.body, {"json"}).id


async def offers(broker: Any, queue: str) -> list[bytes]:
    key = broker.keys(queue).keys[BANDS + 4]
    members: list[bytes] = await broker.connection.client.zrange(key, 0, -1)
    return members


async def pending(broker: Any, queue: str) -> list[dict[str, Any]]:
    """The entries of the queue's band 0 delivered and not settled: id, consumer, ..."""
    client = broker.connection.client
    try:
        found: list[dict[str, Any]] = await client.xpending_range(
            broker.keys(queue).stream(0), "taskq", "-", "+", 100
        )
    except ResponseError as exc:  # no group yet: nothing was ever delivered
        assert "NOGROUP" in str(exc)
        return []
    return found


async def offering(broker: Broker, queue: str, count: int = 1) -> None:
    async def made() -> bool:
        return len(await offers(broker, queue)) == count

    await eventually(made)


async def test_a_publish_hands_its_message_to_the_idle_consumer(broker: Any) -> None:
    async with aclosing(broker.consume(["q"], 10)) as consumer:
        first = message()
        await broker.publish(first, "q")
        delivery = await anext(consumer)  # claimed: the queue was not empty
        await delivery.ack()
        await offering(broker, "q")
        later = message()
        await broker.publish(later, "q")
        # Leased to the consumer by the publish itself, before the consumer has read anything.
        [entry] = await pending(broker, "q")
        assert entry["consumer"].decode().startswith(f"{socket.gethostname()}:{os.getpid()}:")
        assert await offers(broker, "q") == []
        handed = await anext(consumer)
        assert task_id(handed) == later.id
        assert handed.delivery_count == 1
        await handed.ack()
    assert await broker.queue_length("q") == 0


async def test_a_hand_over_takes_the_highest_priority_waiting(broker: Any) -> None:
    async with aclosing(broker.consume(["q"], 1)) as consumer:
        await broker.publish(message(), "q")
        await (await anext(consumer)).ack()
        await offering(broker, "q")
        low, high = message(priority=1), message(priority=9)
        await broker.publish_many([(low, "q"), (high, "q")])
        first = await anext(consumer)
        await first.ack()
        second = await anext(consumer)
        await second.ack()
    assert [task_id(first), task_id(second)] == [high.id, low.id]


async def test_a_delayed_message_is_not_handed_over_before_it_is_due(broker: Any) -> None:
    async with aclosing(broker.consume(["q"], 10)) as consumer:
        await broker.publish(message(), "q")
        await (await anext(consumer)).ack()
        await offering(broker, "q")
        await broker.publish(message(eta=time.time() + 3600), "q")
        assert await pending(broker, "q") == []
        assert len(await offers(broker, "q")) == 1


async def test_a_consumer_never_holds_more_than_its_prefetch(broker: Any, url: str) -> None:
    """Two idle consumers, prefetch 1 each, both offering: two messages, one to each."""
    other = create_broker(url, Settings(broker_transport_options={"visibility_timeout": 3600}))
    await other.connect()
    try:
        held: dict[int, list[str]] = {0: [], 1: []}
        both = anyio.Event()

        async def hold(index: int, source: Broker) -> None:
            async with aclosing(source.consume(["q"], 1)) as consumer:
                async for delivery in consumer:
                    held[index].append(task_id(delivery))
                    if sum(map(len, held.values())) == 2:
                        both.set()
                    await both.wait()  # held, unsettled, until both are out

        async with anyio.create_task_group() as group:
            group.start_soon(hold, 0, broker)
            group.start_soon(hold, 1, other)
            await offering(broker, "q", count=2)
            sent = [message(), message()]
            await broker.publish_many([(m, "q") for m in sent])
            with anyio.fail_after(10):
                await both.wait()
            group.cancel_scope.cancel()
        assert sorted(map(len, held.values())) == [1, 1]
        assert {*held[0], *held[1]} == {m.id for m in sent}
    finally:
        await other.close()


async def test_a_consumer_of_several_queues_is_woken_not_handed(broker: Any) -> None:
    async with aclosing(broker.consume(["a", "b"], 1)) as consumer:
        await broker.publish(message(), "a")
        await (await anext(consumer)).ack()
        sent = message()
        await broker.publish(sent, "b")
        with anyio.fail_after(10):
            delivery = await anext(consumer)
        assert task_id(delivery) == sent.id
        await delivery.ack()
    assert await offers(broker, "a") == await offers(broker, "b") == []


async def test_a_stopping_consumer_gives_back_what_was_handed_to_it_unread(broker: Any) -> None:
    consumer = broker.consume(["q"], 10)
    await broker.publish(message(), "q")
    await (await anext(consumer)).ack()  # holding nothing: it offers
    await offering(broker, "q")
    unread = message()
    await broker.publish(unread, "q")  # handed over while the consumer is not reading
    assert len(await pending(broker, "q")) == 1
    await consumer.aclose()
    assert await pending(broker, "q") == []
    assert await offers(broker, "q") == []
    async with aclosing(broker.consume(["q"], 10)) as again:
        with anyio.fail_after(10):
            delivery = await anext(again)
        assert task_id(delivery) == unread.id
        assert delivery.delivery_count == 1
        await delivery.ack()


async def test_nothing_is_handed_to_a_killed_worker(broker: Any, url: str, tmp_path: Path) -> None:
    """A worker killed with -9 while it offers: the next publish sees nobody listening on its
    channel, so the message stays in the queue (not leased to the dead worker for the whole
    visibility timeout) and the next consumer takes it at once."""
    env = worker_environment(url, {"visibility_timeout": 3600})
    worker = WorkerProcess(env, tmp_path / "worker.log", ["-Q", "q"])
    try:
        await offering(broker, "q")
        worker.signal(signal.SIGKILL)
        worker.wait()
    finally:
        worker.stop()

    async def gone() -> bool:  # Redis has seen its connections close
        [(_, listeners)] = await broker.connection.client.pubsub_numsub(broker.keys("q").channel)
        return listeners == 0

    await eventually(gone)
    sent = message()
    await broker.publish(sent, "q")
    assert await pending(broker, "q") == []
    async with aclosing(broker.consume(["q"], 10)) as consumer:
        with anyio.fail_after(10):
            delivery = await anext(consumer)
        assert task_id(delivery) == sent.id
        await delivery.ack()


async def test_a_malformed_entry_met_by_a_hand_over_becomes_a_dead_letter(broker: Any) -> None:
    async with aclosing(broker.consume(["q"], 10)) as consumer:
        await broker.publish(message(), "q")
        await (await anext(consumer)).ack()
        await offering(broker, "q")
        await broker.connection.client.xadd(broker.keys("q").stream(0), {"x": "y"})
        sent = message()
        await broker.publish(sent, "q")
        delivery = await anext(consumer)
        assert task_id(delivery) == sent.id
        await delivery.ack()
    [letter] = await broker.dead_letters("q")
    assert letter.reason.startswith("malformed broker entry: stream entry ")
    assert await broker.queue_length("q") == 0
