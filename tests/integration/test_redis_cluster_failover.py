"""A Redis Cluster master SIGKILLed under two workers draining `acks_late` tasks on two queues,
the result store on the same cluster.

The killed master owns the first queue's slot and is the node named first in the URL: its
replica takes over within `cluster-node-timeout` (2 s) and a second or two. Meanwhile the
second queue, on another master, keeps its leases (acks and renewals go to each master on
their own): none of its tasks runs twice. The states of a third of its tasks live on the
dead master: their acks wait for the fail-over, off the task slots, each holding a place
of the prefetch. With a prefetch that outlasts the fail-over, the second queue keeps
completing throughout; with the default one, it pauses as long at most (docs/reliability.md).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from itertools import pairwise

import anyio
import pytest
from cluster_servers import NODE_TIMEOUT_MS, ReplicatedRedisCluster
from servers import RedisServer
from support import WorkerProcess, eventually, runs

from taskq import AsyncResult, TaskQ

pytestmark = pytest.mark.integration

TASKS = 400  # per queue
TASK_SECONDS = 0.1
# The killed master's queue resumes within the node timeout and this much more.
RESUME_SLACK = 5.0
# The healthy queue's completions in the second half of the outage (~2 s): its 8 slots run up
# to 80 tasks/s; slots that waited for the dead master's writes would all be stuck by then.
LATE_COMPLETIONS = 40


def _queues_on_two_masters(
    cluster: ReplicatedRedisCluster,
) -> tuple[str, str, RedisServer]:
    """Two fresh queue names whose slots have different masters; the first one's master."""
    while True:
        victim_queue, healthy_queue = (f"q{secrets.token_hex(3)}" for _ in range(2))
        victim = cluster.master_of(f"{{{victim_queue}}}")
        if cluster.master_of(f"{{{healthy_queue}}}") is not victim:
            return victim_queue, healthy_queue, victim


@pytest.fixture
def layout(replicated_redis_cluster: ReplicatedRedisCluster) -> tuple[str, str, RedisServer]:
    return _queues_on_two_masters(replicated_redis_cluster)


@pytest.fixture
def broker_url(
    replicated_redis_cluster: ReplicatedRedisCluster, layout: tuple[str, str, RedisServer]
) -> str:
    """Every node, the victim first."""
    prefix = f"t{secrets.token_hex(4)}:"
    return f"{replicated_redis_cluster.startup_url(first=layout[2])}&prefix={prefix}"


@pytest.fixture
def transport_options() -> dict[str, object]:
    return {"visibility_timeout": 6}


@pytest.fixture
async def producer(broker_url: str) -> AsyncIterator[TaskQ]:
    app = TaskQ("producer", broker=broker_url)
    async with app:
        yield app


Sent = dict[str, list[AsyncResult[float]]]


async def _send(producer: TaskQ, queues: tuple[str, ...], tasks: int) -> Sent:
    sent: Sent = {queue: [] for queue in queues}
    for queue, results in sent.items():
        for _ in range(tasks):
            result = await producer.send_task("itest.finished_at", args=[TASK_SECONDS], queue=queue)
            results.append(result)
    return sent


@asynccontextmanager
async def _killed_under_way(
    cluster: ReplicatedRedisCluster, victim: RedisServer, queue: str, producer: TaskQ, tasks: int
) -> AsyncIterator[float]:
    """Kill `victim` once 30% of `queue` is taken; the time of the kill. After the block the
    victim is started again, as a replica, for the next test."""
    broker = await producer.connected_broker()

    async def under_way() -> bool:
        return await broker.queue_length(queue) < 0.7 * tasks

    await eventually(under_way, timeout=60)
    killed_at = time.time()
    victim.kill()
    try:
        yield killed_at
    finally:
        victim.start()
        await anyio.to_thread.run_sync(cluster.wait_for_state_ok)


async def _all_done(sent: Sent) -> dict[str, list[float]]:
    """When each task finished, by queue, once all have; every state SUCCESS."""
    done = {queue: [await r.get(timeout=60) for r in results] for queue, results in sent.items()}
    for results in sent.values():
        assert {await r.status() for r in results} == {"SUCCESS"}
    return done


async def test_a_killed_master_loses_nothing_and_stalls_only_its_own_queue(
    replicated_redis_cluster: ReplicatedRedisCluster,
    layout: tuple[str, str, RedisServer],
    broker_url: str,
    producer: TaskQ,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    cluster = replicated_redis_cluster
    victim_queue, healthy_queue, victim = layout
    queues = f"{victim_queue},{healthy_queue}"
    workers = [start_worker("-Q", queues, "-c", "4") for _ in range(2)]
    sent = await _send(producer, (victim_queue, healthy_queue), TASKS)
    async with _killed_under_way(cluster, victim, victim_queue, producer, TASKS) as killed_at:
        await anyio.to_thread.run_sync(lambda: cluster.wait_for_failover(f"{{{victim_queue}}}"))

        # A process started now, whose first startup node is dead, publishes and reads back.
        async with TaskQ("late", broker=broker_url) as late:
            after = await late.send_task("itest.add", args=[2, 3], queue=victim_queue)
            assert await after.get(timeout=30) == 5

            async def both_answer() -> bool:  # the control channel, through the cluster
                replies = await late.control.inspect(timeout=2).ping()
                return len(replies.answers) == len(workers)

            await eventually(both_answer, timeout=30)

        done = await _all_done(sent)

    resumed = _resumed_after(done[victim_queue], killed_at)
    assert resumed < NODE_TIMEOUT_MS / 1000 + RESUME_SLACK
    assert _resumed_after(done[healthy_queue], killed_at) <= resumed + 0.5
    for result in sent[healthy_queue]:
        assert sum(runs(worker, result.id) for worker in workers) == 1, result.id
    for worker in workers:
        assert worker.process.poll() is None
    print(  # the figures of docs/reliability.md
        f"\nvictim queue resumed {resumed:.1f} s after the kill;"
        f" healthy queue {_resumed_after(done[healthy_queue], killed_at):.1f} s"
    )


async def test_with_the_store_on_the_cluster_the_healthy_queue_completes_through_the_outage(
    replicated_redis_cluster: ReplicatedRedisCluster,
    layout: tuple[str, str, RedisServer],
    producer: TaskQ,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    cluster = replicated_redis_cluster
    victim_queue, healthy_queue, victim = layout
    queues = f"{victim_queue},{healthy_queue}"
    workers = [start_worker("-Q", queues, "-c", "4") for _ in range(2)]  # the default prefetch
    tasks = 2 * TASKS  # the healthy queue is not drained before the fail-over ends
    sent = await _send(producer, (victim_queue, healthy_queue), tasks)
    async with _killed_under_way(cluster, victim, victim_queue, producer, tasks) as killed_at:
        await anyio.to_thread.run_sync(lambda: cluster.wait_for_failover(f"{{{victim_queue}}}"))
        failed_over_at = time.time()
        done = await _all_done(sent)

    outage = failed_over_at - killed_at
    during = [t for t in done[healthy_queue] if killed_at < t < failed_over_at]
    late = [t for t in during if t > killed_at + outage / 2]
    print(  # the figures of docs/reliability.md
        f"\nhealthy queue during the {outage:.1f} s outage: {len(during)} completions,"
        f" {len(late)} in its second half; victim queue resumed"
        f" {_resumed_after(done[victim_queue], killed_at):.1f} s after the kill"
    )
    assert len(late) >= LATE_COMPLETIONS
    for result in sent[healthy_queue]:
        assert sum(runs(worker, result.id) for worker in workers) == 1, result.id
    for worker in workers:
        assert worker.process.poll() is None


def _resumed_after(finished: list[float], killed_at: float) -> float:
    """Seconds from the kill to the end of the longest pause in the completions after it."""
    after = sorted(t for t in finished if t > killed_at)
    return max(pairwise([killed_at, *after]), key=lambda gap: gap[1] - gap[0])[1] - killed_at
