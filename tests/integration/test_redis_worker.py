"""The real `taskq worker` command on Redis, beyond the worker contract
(tests/contract/test_worker.py): chords under a kill, long tasks, idle wake-ups, malformed
stream entries, the CLI, `acks_late` acks waiting for a paused store."""

from __future__ import annotations

import re
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from pathlib import Path

import anyio
import orjson
import pytest
from servers import RedisCluster, RedisServer, redis_command
from support import (
    WorkerProcess,
    eventually,
    kill_a_worker_during_a_chain,
    kill_a_worker_during_a_chord,
    runs,
)

from taskq import TaskQ
from taskq.brokers.redis import RedisBroker
from taskq.control import CONTROL_CHANNEL
from taskq.worker.presence import HEARTBEAT, ONLINE

pytestmark = pytest.mark.integration

StartWorker = Callable[..., WorkerProcess]
VISIBILITY = 2.0
STORE_PAUSE_MS = 5000


@pytest.fixture
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:12]}:"


@pytest.fixture
def broker_url(redis_server: RedisServer, prefix: str) -> str:
    return f"{redis_server.url}?prefix={prefix}"


@pytest.fixture
def transport_options() -> dict[str, object]:
    return {"visibility_timeout": VISIBILITY}


@pytest.fixture
async def producer(broker_url: str) -> AsyncIterator[TaskQ]:
    app = TaskQ("producer", broker=broker_url)
    async with app:
        yield app


async def test_a_chain_stored_by_reference_survives_a_killed_worker(
    producer: TaskQ, start_worker: StartWorker, prefix: str
) -> None:
    await kill_a_worker_during_a_chain(producer, start_worker, links=200)
    broker = await producer.connected_broker()
    assert isinstance(broker, RedisBroker)
    stored = await broker.connection.client.keys(f"{prefix}key:chain:*")
    assert len(stored) == 19  # the 189 links after the first message's 10, in chunks of 10


async def test_chord_survives_a_killed_worker_through_the_atomic_script(
    producer: TaskQ, start_worker: StartWorker, tmp_path: Path, prefix: str
) -> None:
    await kill_a_worker_during_a_chord(producer, start_worker, tmp_path / "callback-calls")
    broker = await producer.connected_broker()
    assert isinstance(broker, RedisBroker)
    client = broker.connection.client
    assert len(await client.keys(f"{prefix}{{default}}:chord:*:done")) == 1  # the broker counted
    assert await client.keys(f"{prefix}chord:*") == []  # not the store


async def test_a_task_longer_than_the_visibility_timeout_runs_once(
    producer: TaskQ, start_worker: StartWorker, tmp_path: Path
) -> None:
    marker = tmp_path / "marker"
    workers = [start_worker("-c", "2"), start_worker("-c", "2")]
    result = await producer.send_task("itest.marked", args=[str(marker), 2 * VISIBILITY])
    finished_by = await result.get(timeout=30)
    assert marker.read_text() == f"started {finished_by}\n"
    assert sum(runs(worker, result.id) for worker in workers) == 1
    assert all(result.id not in w.output() for w in workers if w.pid != finished_by)


async def test_cli_status_and_purge(producer: TaskQ, worker_env: dict[str, str]) -> None:
    def taskq(*args: str) -> str:
        command = [sys.executable, "-m", "taskq", *args, "-A", "itest_tasks:app"]
        done = subprocess.run(
            command, env=worker_env, cwd=Path(__file__).parent, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    for _ in range(3):
        await producer.send_task("itest.add", args=[1, 2])
    await producer.send_task("itest.add", args=[1, 2], countdown=60)
    assert re.search(r"default\s+4\s+1\s+0", taskq("status", "-Q", "default"))  # 1 delayed
    assert "Purged 4 message(s) from default" in taskq("purge", "-f", "-Q", "default")
    assert await (await producer.connected_broker()).queue_length("default") == 0


async def test_a_worker_picks_up_work_published_while_it_idles(
    producer: TaskQ, start_worker: StartWorker
) -> None:
    start_worker()
    took = []
    for n in range(21):
        started = time.monotonic()
        assert await (await producer.send_task("itest.add", args=[n, 1])).get(timeout=10) == n + 1
        took.append(time.monotonic() - started)
    # Woken by pub/sub: found by the periodic look for expired leases (each second), the
    # median would be about half a second.
    assert statistics.median(took) < 0.2

    await drained(producer)


async def drained(producer: TaskQ) -> None:
    broker = await producer.connected_broker()

    async def empty() -> bool:
        return await broker.queue_length("default") == 0

    await eventually(empty)


async def test_a_malformed_stream_entry_is_dead_lettered_and_the_worker_goes_on(
    producer: TaskQ, start_worker: StartWorker, redis_server: RedisServer, prefix: str
) -> None:
    """An entry without its envelope used to crash every worker that claimed it, forever."""
    redis_command(redis_server.port, "XADD", f"{prefix}{{default}}:s0", "*", "x", "y")
    worker = start_worker()
    assert await (await producer.send_task("itest.add", args=[2, 3])).get(timeout=20) == 5
    broker = await producer.connected_broker()
    [letter] = await broker.dead_letters("default")
    assert re.fullmatch(
        r"malformed broker entry: stream entry \d+-\d+ without its envelope \(field b\)",
        letter.reason,
    )
    assert worker.process.poll() is None


async def heartbeat_of_a_worker(producer: TaskQ) -> None:
    """Return on a worker's first presence event on the control channel (every 2 s): a worker
    sends them once it has loaded the stored revocations (a ping may be answered before)."""
    broker = await producer.connected_broker()
    with anyio.fail_after(20):
        async with aclosing(broker.subscribe(CONTROL_CHANNEL)) as payloads:
            async for payload in payloads:
                if orjson.loads(payload).get("op") in (ONLINE, HEARTBEAT):
                    return


async def test_acks_late_tasks_go_on_while_their_states_wait_and_a_warm_shutdown_acks_them(
    redis_server: RedisServer,
    redis_cluster: RedisCluster,
    broker_url: str,
    prefix: str,
    worker_env: dict[str, str],
    start_worker: StartWorker,
) -> None:
    """The result store on a Redis Cluster (whose writes a worker spreads over domains)
    whose masters pause writes: a worker with one slot still runs one `acks_late` task after
    another (their acks wait for the states, not the slot), and a warm shutdown meanwhile
    waits for the states to be written and the tasks acked: none is left unacked, every state
    is SUCCESS, none ran twice."""
    store_url = f"{redis_cluster.url}?cluster=true&prefix={prefix}"
    worker_env["TASKQ_RESULT_BACKEND"] = store_url  # the env the worker below starts with
    queue = f"q{uuid.uuid4().hex[:8]}"
    tasks = 10
    # One slot, and room in the prefetch for every task: a task waiting for its ack holds its
    # place there (the prefetch is what bounds them).
    worker = start_worker("-Q", queue, "-c", "1", "--prefetch-multiplier", str(2 * tasks))
    async with TaskQ("producer", broker=broker_url, backend=store_url) as producer:
        await producer.connected_store()  # its scripts loaded before the pause
        await heartbeat_of_a_worker(producer)  # then it has its revocations: no task asks the store
        for node in redis_cluster.nodes:
            assert redis_command(node.port, "CLIENT", "PAUSE", str(STORE_PAUSE_MS), "WRITE") == (
                b"+OK"
            )
        paused_until = time.monotonic() + STORE_PAUSE_MS / 1000
        sent = [
            await producer.send_task("itest.finished_at", args=[0.05], queue=queue)
            for _ in range(tasks)
        ]

        async def all_ran() -> bool:
            return worker.output().count("succeeded in") == tasks

        await eventually(all_ran, timeout=STORE_PAUSE_MS / 1000)
        assert time.monotonic() < paused_until  # one slot, and no state written yet
        worker.signal(signal.SIGTERM)
        assert await anyio.to_thread.run_sync(worker.wait) == 0
        assert time.monotonic() >= paused_until  # it waited for the writes and the acks
        assert [await result.status() for result in sent] == ["SUCCESS"] * tasks
    assert redis_command(redis_server.port, "ZCARD", f"{prefix}{{{queue}}}:leases") == b":0"
    assert all(runs(worker, result.id) == 1 for result in sent)
