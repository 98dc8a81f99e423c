"""Chords on Redis with the result store on the same server: each member's result and, with
the last member, the callback's publish are one script call on the broker (redis.lua "chord"),
on a single Redis and on Redis Cluster.

Members are "finished" here by calling what the worker calls after a member ran
(`chord_part` + `chord_part_done`) and then nothing else, as if the process died right after.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import anyio
import pytest
from redis.crc import key_slot

from taskq import ChordError, TaskError, TaskQ, chord, signature
from taskq.brokers.redis import BANDS, RedisBroker
from taskq.brokers.redis_chords import RedisChords
from taskq.defaults import CHORD_RETENTION
from taskq.elements import CHORD_ERROR_TASK
from taskq.message import Message, decode
from taskq.stores.base import TaskMeta
from taskq.testing import running_worker
from taskq.workflow import Membership, chord_part

pytestmark = pytest.mark.integration

ACCEPT = frozenset({"json"})
recorded: list[list[Any]] = []  # the arguments of every t.record call of the test


@pytest.fixture(params=["redis", "redis-cluster"])
def redis_url(request: pytest.FixtureRequest) -> str:
    cluster = request.param == "redis-cluster"
    server = request.getfixturevalue("redis_cluster" if cluster else "redis_server")
    return f"{server.url}?prefix=t{uuid.uuid4().hex[:12]}:" + ("&cluster=true" if cluster else "")


def make_app(url: str, **settings: Any) -> TaskQ:
    app = TaskQ(
        "chords",
        broker=url,
        task_default_queue=f"q-{uuid.uuid4().hex[:12]}",
        broker_transport_options={"polling_interval": 0.02},
        **settings,
    )
    recorded.clear()

    @app.task(name="t.add")
    async def add(x: int, y: int, seconds: float = 0.0) -> int:
        await anyio.sleep(seconds)
        return x + y

    @app.task(name="t.fail")
    async def fail() -> None:
        raise ValueError("boom")

    @app.task(name="t.record")
    async def record(*args: Any) -> list[Any]:
        recorded.append(list(args))
        return list(args)

    return app


@pytest.fixture
async def app(redis_url: str) -> AsyncIterator[TaskQ]:
    async with make_app(redis_url) as app:
        yield app


def sig(app: TaskQ, name: str, *args: Any) -> Any:
    return signature(f"t.{name}", args, app=app)


async def take_members(app: TaskQ, size: int) -> list[Message]:
    """The chord's member messages, taken off the queue and never acked (no worker runs)."""
    broker = await app.connected_broker()
    taken: list[Message] = []
    async with aclosing(broker.consume([app.conf.task_default_queue], size)) as deliveries:
        async for delivery in deliveries:
            taken.append(decode(delivery.body, ACCEPT))
            if len(taken) == size:
                break
    return sorted(taken, key=lambda message: message.group_index or 0)


async def finish(
    app: TaskQ, member: Message, value: Any = None, failure: TaskMeta | None = None
) -> bool:
    """What a worker does once a member has run; True if this call published the callback."""
    membership = Membership.of(member)
    assert membership is not None
    part = chord_part(app, member, membership, value, failure)
    assert part is not None, "the atomic path applies"
    counter = await app.chord_counter()
    assert isinstance(counter, RedisChords), "the broker counts the store's chords"
    return await counter.chord_part_done(part)


async def queued(app: TaskQ, skip: list[Message]) -> list[Message]:
    """The messages in the queue's streams other than `skip`."""
    broker = await app.connected_broker()
    assert isinstance(broker, RedisBroker)
    keys = broker.keys(app.conf.task_default_queue)
    client = broker.connection.client
    ids = {message.id for message in skip}
    found = []
    for band in range(BANDS):
        for _, fields in await client.xrange(keys.stream(band)):
            message = decode(fields[b"b"], ACCEPT)
            if message.id not in ids:
                found.append(message)
    return found


async def test_the_last_members_script_publishes_the_callback(app: TaskQ) -> None:
    header = [sig(app, "add", i, i) for i in range(5)]
    result = await chord(header, sig(app, "record", "tail")).apply_async()
    members = await take_members(app, 5)
    published = [await finish(app, m, value=2 * (m.group_index or 0)) for m in reversed(members)]
    assert published == [False, False, False, False, True]
    [callback] = await queued(app, members)
    assert (callback.id, callback.task) == (result.id, "t.record")
    assert callback.args == [[0, 2, 4, 6, 8], "tail"]
    async with running_worker(app):
        assert await result.get(timeout=10) == [[0, 2, 4, 6, 8], "tail"]


async def test_an_immutable_callback_with_a_countdown_waits_in_the_delayed_set(app: TaskQ) -> None:
    callback = signature("t.record", ["only"], app=app, immutable=True, countdown=0.5)
    result = await chord([sig(app, "add", i, 0) for i in range(2)], callback).apply_async()
    members = await take_members(app, 2)
    assert [await finish(app, m, value=m.group_index) for m in members] == [False, True]
    assert await queued(app, members) == []
    broker = await app.connected_broker()
    assert isinstance(broker, RedisBroker)
    delayed = broker.keys(app.conf.task_default_queue).delayed
    assert await broker.connection.client.zcard(delayed) == 1
    async with running_worker(app):
        assert await result.get(timeout=10) == ["only"]


async def test_a_redelivered_member_counts_once_and_publishes_nothing_more(app: TaskQ) -> None:
    result = await chord(
        [sig(app, "add", i, 0) for i in range(3)], sig(app, "record")
    ).apply_async()
    first, second, third = await take_members(app, 3)
    assert not await finish(app, first, value=0)
    assert not await finish(app, first, value=0)
    assert not await finish(app, second, value=1)
    assert await finish(app, third, value=2)
    assert not await finish(app, second, value=1)  # after the callback went out
    assert [m.id for m in await queued(app, [first, second, third])] == [result.id]


async def test_chord_keys_expire_with_the_chord_retention_in_the_queues_slot(app: TaskQ) -> None:
    await chord([sig(app, "add", i, 0) for i in range(2)], sig(app, "record")).apply_async()
    first, second = await take_members(app, 2)
    broker = await app.connected_broker()
    assert isinstance(broker, RedisBroker)
    keys = broker.keys(app.conf.task_default_queue)
    results, done, added = keys.chord(first.group_id or "")
    assert {key_slot(key.encode()) for key in (results, done, added, keys.stream(0))} == {
        key_slot(keys.stream(0).encode())
    }
    client = broker.connection.client
    await finish(app, first, value=0)
    retention = CHORD_RETENTION * 1000
    assert retention - 60_000 < await client.pttl(results) <= retention
    assert await client.pttl(done) == -2
    await finish(app, second, value=1)
    assert await client.exists(results) == 0
    assert retention - 60_000 < await client.pttl(done) <= retention


async def test_a_failed_member_fails_the_callback_once_with_chord_error(app: TaskQ) -> None:
    errback_id = uuid.uuid4().hex
    callback = sig(app, "record")
    callback.link_error(sig(app, "record").set(task_id=errback_id))
    header = [sig(app, "add", 1, 1), sig(app, "fail"), sig(app, "add", 2, 2)]
    result = await chord(header, callback).apply_async()
    members = await take_members(app, 3)
    boom = TaskMeta.from_exception(members[1].id, ValueError("boom"))
    assert not await finish(app, members[0], value=2)
    assert not await finish(app, members[1], failure=boom)
    assert await finish(app, members[2], value=4)
    assert not await finish(app, members[1], failure=boom)
    [instead] = await queued(app, members)
    assert (instead.id, instead.task) == (result.id, CHORD_ERROR_TASK)
    async with running_worker(app):
        with pytest.raises(
            TaskError, match=rf"chord member 1 \({members[1].id}\) failed"
        ) as caught:
            await result.get(timeout=10)
        assert caught.value.exc_type.endswith(ChordError.__name__)
        failed_id, error = await app.AsyncResult(errback_id).get(timeout=10)
    assert failed_id == result.id and "ValueError: boom" in error["message"]
    assert recorded == [[result.id, error]]


async def test_the_callback_does_not_depend_on_result_expires(redis_server: Any) -> None:
    url = f"{redis_server.url}?prefix=t{uuid.uuid4().hex[:12]}:"
    async with make_app(url, result_expires=0.2) as app, running_worker(app):
        header = [sig(app, "add", 1, 1), sig(app, "add", 2, 2, 1.0)]  # the first expires
        result = await chord(header, sig(app, "record")).apply_async()
        assert await result.get(timeout=10) == [[2, 4]]


async def test_a_callback_in_another_serializer_is_counted_by_the_store(redis_server: Any) -> None:
    url = f"{redis_server.url}?prefix=t{uuid.uuid4().hex[:12]}:"
    settings = {"task_serializer": "msgpack", "accept_content": ["json", "msgpack"]}
    async with make_app(url, **settings) as app:
        callback = sig(app, "record").to_dict()
        member = Message("m", "t.add", group_id="g", group_index=0, group_size=1, chord=callback)
        assert chord_part(app, member, Membership("g", 0, 1, callback), 1, None) is None
        async with running_worker(app):
            header = [sig(app, "add", i, i) for i in range(3)]
            result = await chord(header, sig(app, "record")).apply_async()
            assert await result.get(timeout=10) == [[0, 2, 4]]
