"""The real `taskq worker` command on RabbitMQ, beyond the worker contract
(tests/contract/test_worker.py): delay parking, poison messages, topic routing, shutdown and a
RabbitMQ restart.

Tests share the session's RabbitMQ node with queue names of their own; the restart test
starts a private node. Results go to an SQLite file per test (the AMQP default store).
"""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from servers import RabbitMQServer
from support import WorkerProcess, eventually, wait_for

from taskq import TaskQ, states
from taskq.brokers.amqp_topology import bucket_queue, bucket_ttl

pytestmark = pytest.mark.integration

StartWorker = Callable[..., WorkerProcess]
THREE_HOURS = 3 * 3600.0


@pytest.fixture
def rabbitmq(request: pytest.FixtureRequest, tmp_path: Path) -> RabbitMQServer:
    """The session's node; a private one for a test parametrised with "private"."""
    if getattr(request, "param", None) == "private":
        start: Callable[[RabbitMQServer], RabbitMQServer] = request.getfixturevalue("start_server")
        return start(RabbitMQServer(tmp_path / "rabbitmq"))
    server: RabbitMQServer = request.getfixturevalue("rabbitmq_server")
    return server


@pytest.fixture
def broker_url(rabbitmq: RabbitMQServer) -> str:
    return rabbitmq.url


@pytest.fixture
def queue() -> str:
    return f"itest-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def transport_options(queue: str) -> dict[str, object]:
    """Derived queues: `.quorum` (delivery limit 1), `.math` and `.threads` bound to the
    topic exchange `.events`."""
    events = f"{queue}.events"
    return {
        "polling_interval": 0.05,
        "publish_timeout": 3,
        "quorum_queues": [f"{queue}.quorum"],
        "delivery_limit": 1,
        "bindings": {
            f"{queue}.math": [{"exchange": events, "routing_key": "math.*"}],
            f"{queue}.threads": [{"exchange": events, "routing_key": "thread.#"}],
        },
    }


@pytest.fixture
def results_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/results.db"


@pytest.fixture
def worker_env(worker_env: dict[str, str], results_url: str) -> dict[str, str]:
    return {**worker_env, "TASKQ_RESULT_BACKEND": results_url}


@pytest.fixture
async def producer(
    broker_url: str, results_url: str, transport_options: dict[str, Any], queue: str
) -> AsyncIterator[TaskQ]:
    events = f"{queue}.events"
    app = TaskQ(
        "producer",
        broker=broker_url,
        backend=results_url,
        broker_transport_options=transport_options,
        task_routes={
            "itest.add": {"exchange": events, "routing_key": "math.add"},
            "itest.in_thread": {"exchange": events, "routing_key": "thread.run.now"},
        },
    )
    async with app:
        yield app


async def test_delays_park_in_rabbitmq_not_in_the_worker(
    producer: TaskQ, start_worker: StartWorker, queue: str, rabbitmq: RabbitMQServer
) -> None:
    start_worker("-Q", queue, "-c", "4")
    sent = time.time()
    soon = await producer.send_task("itest.slow_square", args=[3, 0], queue=queue, countdown=3)
    later = await producer.send_task(
        "itest.slow_square", args=[4, 0], queue=queue, countdown=THREE_HOURS
    )
    assert await soon.get(timeout=20) == 9
    store = await producer.connected_store()
    meta = await store.get(soon.id)
    assert meta is not None and meta.date_done is not None
    assert 3.0 <= meta.date_done - sent < 6.0
    depths = _depths(rabbitmq)
    parked = bucket_queue(queue, bucket_ttl(THREE_HOURS - (time.time() - sent)))
    assert depths[parked] == (1, 0)  # ready in its bucket, in nobody's hands
    assert depths[queue] == (0, 0)  # nothing reserved or unacked by the worker
    assert await later.status() == states.PENDING
    broker = await producer.connected_broker()
    assert await broker.queue_length(queue) == 1


async def test_poison_message_on_a_quorum_queue_ends_in_the_dlq(
    producer: TaskQ, start_worker: StartWorker, queue: str, tmp_path: Path
) -> None:
    quorum = f"{queue}.quorum"
    marker = tmp_path / "marker"
    broker = await producer.connected_broker()
    result = await producer.send_task("itest.marked", args=[str(marker), 30.0], queue=quorum)
    for _ in range(2):  # delivery limit 1: the first delivery and one redelivery
        marker.unlink(missing_ok=True)
        worker = start_worker("-Q", quorum)
        wait_for(lambda w=worker: marker.exists() and f"started {w.pid}" in marker.read_text())
        worker.signal(signal.SIGKILL)
        worker.wait()
    await eventually(lambda: _is(broker.dead_letter_length(quorum), 1))
    [letter] = await broker.dead_letters(quorum)
    assert letter.reason == "delivery_limit" and result.id.encode() in letter.body
    assert await broker.queue_length(quorum) == 0


async def test_topic_routing_reaches_two_queues_and_their_workers(
    producer: TaskQ, start_worker: StartWorker, queue: str
) -> None:
    maths = start_worker("-Q", f"{queue}.math")
    threads = start_worker("-Q", f"{queue}.threads", "--threads", "2")
    added = await producer.send_task("itest.add", args=[2, 3])
    threaded = await producer.send_task("itest.in_thread", args=[4])
    assert await added.get(timeout=20) == 5
    assert await threaded.get(timeout=20) == {"double": 8, "main_thread": False}
    store = await producer.connected_store()
    added_meta, threaded_meta = await store.get(added.id), await store.get(threaded.id)
    assert added_meta is not None and threaded_meta is not None
    assert (added_meta.worker or "").startswith(f"{maths.pid}@")
    assert (threaded_meta.worker or "").startswith(f"{threads.pid}@")


async def test_warm_shutdown_finishes_running_and_returns_reserved(
    producer: TaskQ, start_worker: StartWorker, queue: str, tmp_path: Path
) -> None:
    marker = tmp_path / "marker"
    worker = start_worker("-Q", queue, "-c", "1", "--prefetch-multiplier", "4")
    running = await producer.send_task("itest.marked", args=[str(marker), 1.0], queue=queue)
    wait_for(marker.exists)
    reserved = [
        await producer.send_task("itest.slow_square", args=[n, 0], queue=queue) for n in range(3)
    ]
    broker = await producer.connected_broker()
    await eventually(lambda: _is(broker.queue_length(queue), 0))  # all four in the worker
    worker.signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == 0
    assert await running.get(timeout=5) == worker.pid
    assert await broker.queue_length(queue) == 3  # given back at once
    assert all([await r.status() == states.PENDING for r in reserved])
    start_worker("-Q", queue)
    assert [await r.get(timeout=20) for r in reserved] == [0, 1, 4]


@pytest.mark.parametrize("rabbitmq", ["private"], indirect=True)
async def test_rabbitmq_restart_loses_nothing(
    producer: TaskQ, start_worker: StartWorker, queue: str, rabbitmq: RabbitMQServer
) -> None:
    worker = start_worker("-Q", queue, "-c", "4")
    before = [
        await producer.send_task("itest.slow_square", args=[n, 0.3], queue=queue) for n in range(20)
    ]
    await eventually(lambda: _is(before[0].status(), states.SUCCESS))
    rabbitmq.stop()
    with pytest.raises(ConnectionError):  # confirms: a publish nobody received is an error
        await producer.send_task("itest.slow_square", args=[0, 0], queue=queue)
    rabbitmq.start()
    after = [
        await producer.send_task("itest.slow_square", args=[n, 0], queue=queue) for n in range(5)
    ]
    assert [await r.get(timeout=60) for r in before] == [n * n for n in range(20)]
    assert [await r.get(timeout=30) for r in after] == [n * n for n in range(5)]
    assert worker.process.poll() is None


async def _is(value: Any, expected: Any) -> bool:
    return bool(await value == expected)


def _depths(rabbitmq: RabbitMQServer) -> dict[str, tuple[int, int]]:
    """Every queue's (ready, unacknowledged) counts, as RabbitMQ itself reports them."""
    listing = rabbitmq.ctl(
        "list_queues",
        "name",
        "messages_ready",
        "messages_unacknowledged",
        "--quiet",
        "--no-table-headers",
    )
    rows = [line.split("\t") for line in listing.splitlines() if line.count("\t") == 2]
    return {name: (int(ready), int(unacked)) for name, ready, unacked in rows}
