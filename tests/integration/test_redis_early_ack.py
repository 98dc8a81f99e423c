"""An early ack on Redis (a task that is not `acks_late`): the run may start once the ack is
written to the connection, before Redis has answered it; the ack still lands."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import aclosing

import anyio
import pytest
from redis.asyncio import Redis
from servers import RedisServer
from support import eventually

from taskq.brokers.base import create_broker
from taskq.brokers.redis import RedisBroker
from taskq.config import Settings
from taskq.message import Message

pytestmark = pytest.mark.integration

PAUSE_MS = 2000


@pytest.fixture
async def paused(redis_server: RedisServer) -> AsyncIterator[tuple[RedisBroker, Redis]]:
    """A broker, and a client of the same Redis that pauses it (unpaused at the end)."""
    url = f"{redis_server.url}?prefix=t{uuid.uuid4().hex[:12]}:"
    broker = create_broker(url, Settings())
    assert isinstance(broker, RedisBroker)
    await broker.connect()
    other = Redis.from_url(redis_server.url)
    try:
        await broker.publish(Message(id=uuid.uuid4().hex, task="tests.work"), "q")
        yield broker, other
    finally:
        await other.execute_command("CLIENT", "UNPAUSE")
        await other.aclose()
        await broker.close()


async def test_an_early_ack_returns_before_redis_answers_and_still_lands(
    paused: tuple[RedisBroker, Redis],
) -> None:
    broker, other = paused
    async with aclosing(broker.consume(["q"], 10)) as consumer:
        delivery = await anext(consumer)
        assert await broker.queue_length("q") == 1  # claimed, not acked
        await other.execute_command("CLIENT", "PAUSE", PAUSE_MS, "ALL")
        with anyio.fail_after(PAUSE_MS / 2000):  # well before Redis answers anything
            await delivery.ack_before_run()
        await other.execute_command("CLIENT", "UNPAUSE")

        async def acked() -> bool:  # the entry stays in its stream until the ack lands
            return await broker.queue_length("q") == 0

        await eventually(acked)


async def test_a_plain_ack_waits_for_redis(paused: tuple[RedisBroker, Redis]) -> None:
    broker, other = paused
    async with aclosing(broker.consume(["q"], 10)) as consumer:
        delivery = await anext(consumer)
        await other.execute_command("CLIENT", "PAUSE", PAUSE_MS, "ALL")
        with anyio.move_on_after(PAUSE_MS / 2000) as waited:
            await delivery.ack()
        assert waited.cancelled_caught


async def test_early_acks_written_together_free_their_prefetch_once_redis_answers(
    paused: tuple[RedisBroker, Redis],
) -> None:
    broker, other = paused
    await broker.publish_many([(Message(id=uuid.uuid4().hex, task="tests.work"), "q")] * 2)
    async with aclosing(broker.consume(["q"], 2)) as consumer:
        held = [await anext(consumer), await anext(consumer)]  # the whole prefetch
        await other.execute_command("CLIENT", "PAUSE", PAUSE_MS, "ALL")
        with anyio.fail_after(PAUSE_MS / 2000):
            async with anyio.create_task_group() as early:
                for delivery in held:
                    early.start_soon(delivery.ack_before_run)
        await other.execute_command("CLIENT", "UNPAUSE")
        with anyio.fail_after(PAUSE_MS / 1000):
            await anext(consumer)  # a slot came back with an ack's reply

        async def both_acked() -> bool:  # the third message, claimed, is all that is left
            return await broker.queue_length("q") == 1

        await eventually(both_acked)


async def test_an_early_ack_written_at_once_lands_after_redis_lost_its_scripts(
    paused: tuple[RedisBroker, Redis],
) -> None:
    """An idle consumer's early ack goes out at once, as a script call; Redis having lost
    its scripts (a restart, SCRIPT FLUSH) answers NOSCRIPT, and the ack is sent again with
    the scripts loaded: it lands, and its prefetch slot comes back."""
    broker, other = paused
    await broker.publish(Message(id=uuid.uuid4().hex, task="tests.work"), "q")
    async with aclosing(broker.consume(["q"], 1)) as consumer:
        delivery = await anext(consumer)  # the whole prefetch
        await other.script_flush()
        await delivery.ack_before_run()
        with anyio.fail_after(5):
            await anext(consumer)  # the second message: the slot came back

        async def acked() -> bool:  # the second message, claimed, is all that is left
            return await broker.queue_length("q") == 1

        await eventually(acked)
