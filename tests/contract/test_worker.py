"""The worker contract: the real `taskq worker` command, as a subprocess, on every broker.

What a user sees is the same on each one: results of async and thread tasks, an `acks_late`
task of a SIGKILLed worker completed by a second worker, higher priorities first, delayed
calls held in the broker until their eta (through a worker restart), and bad input in the
queue's dead letters with the reason while the worker carries on.

The memory broker lives in one process, so it has no place here. Each case has a queue (and on
Redis a key prefix) of its own: the servers are shared by the session. Worker subprocesses come
from the `start_worker` fixture (tests/conftest.py), their tasks from
tests/integration/itest_tasks.py.
"""

from __future__ import annotations

import re
import signal
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import orjson
import pytest
from raw_publish import publish_raw
from support import WorkerProcess, eventually, runs, wait_for, worker_broker_url

from taskq import TaskError, TaskQ, states
from taskq.brokers.base import Broker
from taskq.brokers.redis import QueueKeys, RedisBroker
from taskq.message import Message

pytestmark = pytest.mark.integration

StartWorker = Callable[..., WorkerProcess]

BROKERS = ["sqlite", "redis", "redis-cluster", "amqp"]
# RabbitMQ has no leases: a dead worker's unacked messages are delivered again at once.
LEASE_BROKERS = {"sqlite", "redis", "redis-cluster"}
# Each broker's round trip runs on one event loop, so both loops run a real worker.
LOOPS = {"sqlite": "asyncio", "redis": "uvloop", "redis-cluster": "asyncio", "amqp": "uvloop"}
VISIBILITY = 2.0
COUNTDOWN = 4.0  # room for two worker starts and a warm stop on a loaded machine
RAW_GARBAGE = b"\x00\x01 not json at all"


@pytest.fixture(params=BROKERS)
def kind(request: pytest.FixtureRequest) -> str:
    """Which broker the case runs on."""
    name: str = request.param
    return name


@pytest.fixture
def queue() -> str:
    return f"contract-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def prefix() -> str:
    """The case's Redis key prefix."""
    return f"t{uuid.uuid4().hex[:12]}:"


@pytest.fixture
def broker_url(kind: str, request: pytest.FixtureRequest, tmp_path: Path, prefix: str) -> str:
    return worker_broker_url(kind, request, tmp_path, prefix)


@pytest.fixture
def results_url(kind: str, tmp_path: Path) -> str | None:
    """RabbitMQ keeps no results: an SQLite file per case (the AMQP default store). The
    other brokers' results follow the broker."""
    return f"sqlite:///{tmp_path}/results.db" if kind == "amqp" else None


@pytest.fixture
def transport_options(kind: str, queue: str) -> dict[str, object]:
    """Short leases; on RabbitMQ the case's queue is a priority queue."""
    options: dict[str, object] = {"visibility_timeout": VISIBILITY, "polling_interval": 0.05}
    if kind == "amqp":
        options |= {"publish_timeout": 3, "queue_max_priority": {queue: 9}}
    return options


@pytest.fixture
def worker_env(worker_env: dict[str, str], queue: str, results_url: str | None) -> dict[str, str]:
    """Workers consume the case's queue (their default) and share the producer's store."""
    env = {**worker_env, "TASKQ_TASK_DEFAULT_QUEUE": queue}
    if results_url is not None:
        env["TASKQ_RESULT_BACKEND"] = results_url
    return env


@pytest.fixture
async def producer(
    broker_url: str, results_url: str | None, transport_options: dict[str, object], queue: str
) -> AsyncIterator[TaskQ]:
    app = TaskQ(
        "producer",
        broker=broker_url,
        backend=results_url,
        broker_transport_options=transport_options,
        task_default_queue=queue,
    )
    async with app:
        yield app


async def drained(broker: Broker, queue: str) -> None:
    """Wait until nothing is left in `queue` (an `acks_late` ack follows its result)."""

    async def empty() -> bool:
        return await broker.queue_length(queue) == 0

    await eventually(empty)


async def test_async_and_sync_tasks_return_results(
    kind: str, producer: TaskQ, start_worker: StartWorker, queue: str
) -> None:
    loop = LOOPS[kind]
    worker = start_worker("-c", "10", "--threads", "2", "--loop", loop)
    added = await producer.send_task("itest.add", args=[4, 5])
    threaded = await producer.send_task("itest.in_thread", args=[21])
    assert await added.get(timeout=20) == 9
    assert await threaded.get(timeout=20) == {"double": 42, "main_thread": False}
    assert await added.status() == states.SUCCESS
    assert await threaded.status() == states.SUCCESS
    assert f"loop {loop}" in worker.output()
    await drained(await producer.connected_broker(), queue)
    worker.signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == 0


async def test_killed_worker_acks_late_task_completes_on_a_second_worker(
    kind: str, producer: TaskQ, start_worker: StartWorker, queue: str, tmp_path: Path
) -> None:
    marker = tmp_path / "marker"
    first, second = start_worker("-c", "2"), start_worker("-c", "2")
    result = await producer.send_task("itest.marked", args=[str(marker), 1.0])  # acks_late
    wait_for(lambda: marker.exists() and "started" in marker.read_text())
    victim, survivor = (first, second) if str(first.pid) in marker.read_text() else (second, first)
    victim.signal(signal.SIGKILL)
    killed_at = time.monotonic()
    victim.wait()
    wait_for(lambda: f"started {survivor.pid}" in marker.read_text(), timeout=20)
    handed_over_after = time.monotonic() - killed_at
    assert await result.get(timeout=20) == survivor.pid
    if kind in LEASE_BROKERS:
        # Not before the dead worker's lease ran out (it renewed it 4 times per timeout).
        assert handed_over_after >= VISIBILITY / 2, handed_over_after
    else:
        assert handed_over_after < VISIBILITY, handed_over_after  # at once, no lease to wait out
    await drained(await producer.connected_broker(), queue)
    assert runs(survivor, result.id) == 1


async def test_higher_priorities_run_first(producer: TaskQ, start_worker: StartWorker) -> None:
    priorities = [0, 3, None, 9, 5, 9, 1]
    results = [
        await producer.send_task("itest.add", args=[i, 0], priority=p)
        for i, p in enumerate(priorities)
    ]
    worker = start_worker("-c", "1", "--prefetch-multiplier", "1")
    for result in results:
        await result.get(timeout=20)
    order = re.findall(r"Task itest\.add\[(\w+)\] succeeded", worker.output())
    # Highest first, FIFO within a priority; none counts as 0.
    expected = sorted(range(len(priorities)), key=lambda i: (-(priorities[i] or 0), i))
    assert order == [results[i].id for i in expected]


async def resting_in_the_broker(
    kind: str, broker: Broker, broker_url: str, prefix: str, queue: str
) -> int:
    """How many of `queue`'s messages the broker keeps itself, in no worker's hands: SQLite's
    unleased rows, Redis's delayed set, what RabbitMQ has ready in the queue and its delay
    buckets (the producer holds none unacked)."""
    if kind == "sqlite":
        with sqlite3.connect(broker_url.removeprefix("sqlite:///")) as db:
            sql = "SELECT count(*) FROM taskq_messages WHERE queue = ? AND lease IS NULL"
            return int(db.execute(sql, (queue,)).fetchone()[0])
    if kind in ("redis", "redis-cluster"):
        assert isinstance(broker, RedisBroker)
        return int(await broker.connection.client.zcard(QueueKeys(prefix, queue).delayed))
    return await broker.queue_length(queue)


async def test_delayed_calls_wait_in_the_broker_for_their_eta_through_a_worker_restart(
    kind: str,
    producer: TaskQ,
    start_worker: StartWorker,
    broker_url: str,
    prefix: str,
    queue: str,
) -> None:
    broker = await producer.connected_broker()

    async def resting() -> int:
        return await resting_in_the_broker(kind, broker, broker_url, prefix, queue)

    first = start_worker()
    sent = time.time()
    results = [await producer.send_task("itest.ran_at", countdown=COUNTDOWN) for _ in range(3)]
    assert await resting() == 3  # not prefetched by the worker
    first.signal(signal.SIGTERM)
    assert first.wait(timeout=30) == 0
    assert all([await r.status() == states.PENDING for r in results])

    async def all_resting() -> bool:  # RabbitMQ takes back what the worker was parking
        return await resting() == 3

    await eventually(all_resting)
    second = start_worker()
    second_up = time.time()
    ran_at = [await r.get(timeout=20) for r in results]
    assert all(at >= sent + COUNTDOWN for at in ran_at), [at - sent for at in ran_at]
    assert second_up < sent + COUNTDOWN, "the restart took too long to prove the eta held"
    assert all(runs(second, r.id) == 1 for r in results)
    assert all(r.id not in first.output() for r in results)
    await drained(broker, queue)


async def test_bad_input_is_dead_lettered_and_the_worker_carries_on(
    kind: str,
    producer: TaskQ,
    start_worker: StartWorker,
    broker_url: str,
    prefix: str,
    queue: str,
) -> None:
    worker = start_worker()
    broker = await producer.connected_broker()
    await broker.publish(
        Message(id="pickled", task="itest.add", args=[1, 2], content_type="pickle"), queue
    )
    await broker.publish(Message(id="bad-priority", task="itest.add", priority=42), queue)
    unknown = await producer.send_task("itest.nope", args=[1])
    unbound = await producer.send_task("itest.add", args=[1])
    no_task = orjson.dumps({"v": 1, "id": "no-task-name"})
    await publish_raw(kind, broker, broker_url, prefix, queue, [RAW_GARBAGE, no_task])

    async def all_dead_lettered() -> bool:
        return await broker.dead_letter_length(queue) == 6

    await eventually(all_dead_lettered)
    letters = await broker.dead_letters(queue)
    reasons = " | ".join(letter.reason for letter in letters)
    assert len(letters) == 6, reasons
    for expected in (
        "refused",
        "priority",
        "not registered",
        "BadArgumentsError",
        "not JSON",
        "missing 'task'",
    ):
        assert expected in reasons
    assert RAW_GARBAGE in {letter.body for letter in letters}  # kept as it came
    ids = ("pickled", "bad-priority", unknown.id, unbound.id, "no-task-name")

    async def all_failed() -> bool:  # the state is written after the dead letter, batched
        return all([await producer.AsyncResult(i).status() == states.FAILURE for i in ids])

    await eventually(all_failed)
    with pytest.raises(TaskError, match="not registered"):
        await unknown.get(timeout=1)
    assert await (await producer.send_task("itest.add", args=[2, 3])).get(timeout=20) == 5
    assert worker.process.poll() is None
    await drained(broker, queue)
