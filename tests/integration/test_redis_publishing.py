"""Publishes of one loop turn share a round trip on Redis, and each caller still gets its own
outcome: its error alone, its cancellation honoured."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from servers import RedisServer

from taskq import TaskQ
from taskq.brokers.redis import RedisBroker

pytestmark = pytest.mark.integration


@pytest.fixture
def url(redis_server: RedisServer) -> str:
    return f"{redis_server.url}?prefix=t{uuid.uuid4().hex[:12]}:"


async def broker_of(app: TaskQ) -> RedisBroker:
    broker = await app.connected_broker()
    assert isinstance(broker, RedisBroker)
    return broker


async def test_a_hundred_concurrent_delays_take_two_round_trips(
    url: str, round_trips: list[int]
) -> None:
    async with TaskQ("producer", broker=url) as app:
        work = app.task(name="tests.work")(lambda n: n)
        broker = await broker_of(app)
        await asyncio.gather(*(work.delay(n) for n in range(2)))  # two connections made
        round_trips[0] = 0
        results = await asyncio.gather(*(work.delay(n) for n in range(100)))
        assert round_trips[0] == 2  # the first at once, the 99 others made meanwhile together
        assert len({result.id for result in results}) == 100
        assert await broker.queue_length("default") == 102


async def test_one_at_a_time_each_publish_is_its_own_round_trip(
    url: str, round_trips: list[int]
) -> None:
    async with TaskQ("producer", broker=url) as app:
        work = app.task(name="tests.work")(lambda n: n)
        broker = await broker_of(app)
        round_trips[0] = 0
        for n in range(5):
            await work.delay(n)
        assert round_trips[0] == 5
        assert await broker.queue_length("default") == 5


async def test_a_message_that_cannot_be_encoded_fails_its_call_alone(url: str) -> None:
    async with TaskQ("producer", broker=url) as app:
        work = app.task(name="tests.work", typing=False)(lambda n: n)
        broker = await broker_of(app)
        outcomes = await asyncio.gather(
            work.delay(1), work.delay(object()), work.delay(3), return_exceptions=True
        )
        assert isinstance(outcomes[1], Exception)
        assert not isinstance(outcomes[0], Exception) and not isinstance(outcomes[2], Exception)
        assert await broker.queue_length("default") == 2


async def test_a_queue_redis_refuses_fails_only_the_calls_publishing_there(url: str) -> None:
    async with TaskQ("producer", broker=url) as app:
        work = app.task(name="tests.work")(lambda n: n)
        broker = await broker_of(app)
        await broker.connection.client.set(broker.keys("broken").stream(0), "not a stream")
        outcomes = await asyncio.gather(
            work.apply_async([1], queue="fine"),
            work.apply_async([2], queue="broken"),
            work.apply_async([3], queue="fine"),
            return_exceptions=True,
        )
        assert "WRONGTYPE" in str(outcomes[1])
        assert not isinstance(outcomes[0], Exception) and not isinstance(outcomes[2], Exception)
        assert await broker.queue_length("fine") == 2


@pytest.mark.parametrize("cancelled", [1, 2])
async def test_a_call_cancelled_before_its_batch_goes_is_not_published(
    url: str, cancelled: int
) -> None:
    async with TaskQ("producer", broker=url) as app:
        work = app.task(name="tests.work")(lambda n: n)
        broker = await broker_of(app)
        calls = [asyncio.ensure_future(work.delay(n)) for n in range(3)]
        await asyncio.sleep(0)  # the first is sent; the others joined a batch not gone yet
        calls[cancelled].cancel()
        done = await asyncio.gather(*calls, return_exceptions=True)
        assert isinstance(done[cancelled], asyncio.CancelledError)
        assert await broker.queue_length("default") == 2
