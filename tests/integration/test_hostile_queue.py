"""A real `taskq worker` fed 5,000 hostile messages written straight into its queue on each
broker (tests/hostile.py: garbage, invalid UTF-8, wrong types, deep nesting, huge numbers,
oversized bodies, bad tags, unknown tasks, bad arguments, mutated envelopes) stays alive,
dead-letters every one of them with a reason, and runs the next good task."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from hostile import OVERSIZED_LIMIT, hostile_bodies
from raw_publish import publish_raw
from support import WorkerProcess, eventually, worker_broker_url

from taskq import TaskQ

pytestmark = pytest.mark.integration

StartWorker = Callable[..., WorkerProcess]
COUNT = 5000
BATCH = 500


@pytest.fixture(params=["sqlite", "redis", "amqp"])
def kind(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:12]}:"


@pytest.fixture
def queue() -> str:
    return f"hostile-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def broker_url(kind: str, request: pytest.FixtureRequest, tmp_path: Path, prefix: str) -> str:
    return worker_broker_url(kind, request, tmp_path, prefix)


@pytest.fixture
def results_url(kind: str, tmp_path: Path) -> str | None:
    return f"sqlite:///{tmp_path}/results.db" if kind == "amqp" else None


@pytest.fixture
def worker_env(worker_env: dict[str, str], queue: str, results_url: str | None) -> dict[str, str]:
    env = {
        **worker_env,
        "TASKQ_TASK_DEFAULT_QUEUE": queue,
        "TASKQ_TASK_MAX_MESSAGE_BYTES": str(OVERSIZED_LIMIT),
    }
    return env if results_url is None else {**env, "TASKQ_RESULT_BACKEND": results_url}


@pytest.fixture
async def producer(broker_url: str, results_url: str | None, queue: str) -> AsyncIterator[TaskQ]:
    app = TaskQ("producer", broker=broker_url, backend=results_url, task_default_queue=queue)
    async with app:
        yield app


async def test_a_worker_dead_letters_every_hostile_message_and_carries_on(
    kind: str,
    producer: TaskQ,
    start_worker: StartWorker,
    broker_url: str,
    prefix: str,
    queue: str,
) -> None:
    worker = start_worker("-c", "200")
    broker = await producer.connected_broker()
    await broker.queue_length(queue)  # on RabbitMQ it declares the queue, as a publish would
    bodies = hostile_bodies(COUNT)
    for start in range(0, COUNT, BATCH):
        await publish_raw(kind, broker, broker_url, prefix, queue, bodies[start : start + BATCH])

    async def all_dead_lettered() -> bool:
        return await broker.dead_letter_length(queue) >= COUNT

    await eventually(all_dead_lettered, timeout=120)
    # On RabbitMQ a dead letter is a confirmed copy, then the original's ack: a copy whose
    # confirm came too late (each logged) sent the original back, to be dead-lettered again.
    late = worker.output().count("Lost the settlement") if kind == "amqp" else 0
    unusual = [line for line in worker.output().splitlines() if "Dead-lettered" not in line]
    assert COUNT <= await broker.dead_letter_length(queue) <= COUNT + late, unusual[-20:]
    # RabbitMQ lists dead letters one basic.get at a time: there, the first 500 are read.
    listed = 500 if kind == "amqp" else COUNT
    letters = await broker.dead_letters(queue, limit=listed)
    assert len(letters) == listed and all(letter.reason for letter in letters)
    kept = {letter.body for letter in letters}
    assert kept <= set(bodies)  # each as it came
    assert listed < COUNT or kept == set(bodies)
    assert worker.process.poll() is None
    assert await (await producer.send_task("itest.add", args=[2, 3])).get(timeout=20) == 5
