"""A RabbitMQ cluster node SIGKILLed under two workers draining `acks_late` tasks on two
quorum queues.

The killed node leads the first queue and is the node the first worker is connected to
(the first of its URLs); the second queue's leader and the second worker's node live on.
The first worker moves to a surviving node, the first queue gets a new leader, and a
producer and a worker whose first URL is the dead node start on a surviving one.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator
from itertools import pairwise
from pathlib import Path

import anyio
import pytest
from cluster_servers import RabbitMQCluster
from servers import RabbitMQServer
from support import WorkerProcess, eventually

from taskq import AsyncResult, TaskQ

pytestmark = pytest.mark.integration

TASKS = 300  # per queue
TASK_SECONDS = 0.1
HEALTHY_GAP = 1.0  # the surviving leader's queue never goes this long without a completion
RESUME_WITHIN = 10.0  # the killed leader's queue resumes within this many seconds


@pytest.fixture
def queues() -> tuple[str, str, str]:
    """The killed node's queue, the other queue, and the late worker's own queue."""
    token = secrets.token_hex(3)
    return f"a-{token}", f"b-{token}", f"c-{token}"


@pytest.fixture
def transport_options(queues: tuple[str, str, str]) -> dict[str, object]:
    return {"quorum_queues": list(queues)}


@pytest.fixture
def results_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/results.db"


@pytest.fixture
def broker_url(rabbitmq_cluster: RabbitMQCluster) -> str:
    return rabbitmq_cluster.url(first=rabbitmq_cluster.nodes[0])


@pytest.fixture
def worker_env(worker_env: dict[str, str], results_url: str) -> dict[str, str]:
    return {**worker_env, "TASKQ_RESULT_BACKEND": results_url}


def _app(name: str, url: str, results_url: str, transport: dict[str, object]) -> TaskQ:
    return TaskQ(name, broker=url, backend=results_url, broker_transport_options=transport)


@pytest.fixture
async def producers(
    rabbitmq_cluster: RabbitMQCluster, results_url: str, transport_options: dict[str, object]
) -> AsyncIterator[tuple[TaskQ, TaskQ]]:
    """Producers on the first and on the second node (a queue is led by its declarer's)."""
    first, second = rabbitmq_cluster.nodes[:2]
    apps = [
        _app(f"producer-{i}", rabbitmq_cluster.url(first=node), results_url, transport_options)
        for i, node in enumerate((first, second))
    ]
    async with apps[0], apps[1]:
        yield apps[0], apps[1]


async def test_a_killed_node_loses_nothing_and_its_worker_moves_to_another(
    rabbitmq_cluster: RabbitMQCluster,
    producers: tuple[TaskQ, TaskQ],
    queues: tuple[str, str, str],
    worker_env: dict[str, str],
    results_url: str,
    transport_options: dict[str, object],
    tmp_path: Path,
) -> None:
    cluster = rabbitmq_cluster
    victim, survivor = cluster.nodes[:2]
    victim_queue, healthy_queue, late_queue = queues
    on_victim, on_survivor = producers
    await (await on_victim.connected_broker()).queue_length(victim_queue)  # declared there
    await (await on_survivor.connected_broker()).queue_length(healthy_queue)
    assert cluster.leader_of(victim_queue) is victim
    assert cluster.leader_of(healthy_queue) is survivor

    workers: list[WorkerProcess] = []

    def start_worker(first: RabbitMQServer, *args: str) -> WorkerProcess:
        env = {**worker_env, "TASKQ_BROKER_URL": cluster.url(first=first)}
        workers.append(WorkerProcess(env, tmp_path / f"worker-{len(workers)}.log", list(args)))
        return workers[-1]

    try:
        moving = start_worker(victim, "-Q", f"{victim_queue},{healthy_queue}", "-c", "4")
        staying = start_worker(survivor, "-Q", f"{victim_queue},{healthy_queue}", "-c", "4")
        sent: dict[str, list[AsyncResult[float]]] = {victim_queue: [], healthy_queue: []}
        for queue, results in sent.items():
            for _ in range(TASKS):
                results.append(
                    await on_survivor.send_task(
                        "itest.finished_at", args=[TASK_SECONDS], queue=queue
                    )
                )
        broker = await on_survivor.connected_broker()

        async def under_way() -> bool:
            return await broker.queue_length(victim_queue) < 0.7 * TASKS

        await eventually(under_way, timeout=60)
        killed_at = time.time()
        victim.kill()

        async def moved() -> bool:
            return "Connected to RabbitMQ at" in moving.output()

        await eventually(moved, timeout=30)

        # A producer and a worker whose first URL is the dead node start on a survivor.
        late_url = cluster.url(first=victim)
        late = start_worker(victim, "-Q", late_queue, "-c", "2")
        async with _app("late", late_url, results_url, transport_options) as producer:
            after = await producer.send_task(
                "itest.marked_early", args=["/dev/null", 0], queue=late_queue
            )
            assert await after.get(timeout=30) == late.pid
            again = await producer.send_task("itest.add", args=[2, 3], queue=victim_queue)
            assert await again.get(timeout=30) == 5

        done = {q: [await r.get(timeout=60) for r in results] for q, results in sent.items()}
        for results in sent.values():
            assert {await r.status() for r in results} == {"SUCCESS"}
        for worker in (moving, staying, late):
            assert worker.process.poll() is None
    finally:
        for worker in workers:
            worker.stop()
        victim.start()  # rejoins the cluster, for the next test
        await anyio.to_thread.run_sync(lambda: cluster.wait_for_members(len(cluster.nodes)))

    resumed = _resumed_after(done[victim_queue], killed_at)
    healthy_gap = _longest_gap(done[healthy_queue], killed_at)
    assert resumed < RESUME_WITHIN
    assert healthy_gap < HEALTHY_GAP, f"the healthy queue stalled {healthy_gap:.2f} s"
    print(  # the figures of docs/reliability.md
        f"\nvictim queue resumed {resumed:.1f} s after the kill;"
        f" longest pause of the other queue {healthy_gap:.2f} s"
    )


def _pauses(finished: list[float], killed_at: float) -> list[tuple[float, float]]:
    after = sorted(t for t in finished if t > killed_at)
    return list(pairwise([killed_at, *after]))


def _resumed_after(finished: list[float], killed_at: float) -> float:
    """Seconds from the kill to the end of the longest pause in the completions after it."""
    return max(_pauses(finished, killed_at), key=lambda gap: gap[1] - gap[0])[1] - killed_at


def _longest_gap(finished: list[float], killed_at: float) -> float:
    return max(later - earlier for earlier, later in _pauses(finished, killed_at))
