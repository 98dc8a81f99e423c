"""streaq on Redis (through coredis).

The worker is `streaq run module:worker`, concurrency and sync concurrency from the workload,
tasks registered `silent=True` (streaq's switch for its log line per task; every library here
runs without one). Bulk publishing is `Worker.enqueue_many` (one pipeline).

Canvas: a chain is `.then()` links, published by recursing link by link (1,000 links exceed
Python's recursion limit). streaq has no chord; the closest is a task started `after=` the
members' ids, which runs once they have all finished but does not receive their results.

`Task.result()` opens a pub/sub subscription per call, and coredis spends up to its
`unsubscription_timeout` (0.1 s) closing it: each round trip takes at least 100 ms.
"""

from __future__ import annotations

from contextlib import AsyncExitStack

from streaq import Worker

from benchmarks import tasks
from benchmarks.adapters.base import (
    BATCH_SIZE,
    CONCURRENCY,
    THREADS,
    Adapter,
    WorkerSpec,
    batches,
    broker_url,
    console_script,
    env_int,
)
from benchmarks.tasks import Kind

worker = Worker(
    redis_url=broker_url(),
    concurrency=env_int(CONCURRENCY, 100),
    sync_concurrency=env_int(THREADS, 10),
)


TASKS = {
    kind: worker.task(body, name=kind.value, silent=True) for kind, body in tasks.BODIES.items()
}
noop = TASKS[Kind.NOOP]
step = worker.task(tasks.step, name="step", silent=True)
tally = worker.task(tasks.tally, name="tally", silent=True)


class StreaqAdapter(Adapter):
    library = "streaq"
    batch_method = "Worker.enqueue_many"

    async def open(self) -> None:
        self._stack = AsyncExitStack()
        await self._stack.enter_async_context(worker)

    async def close(self) -> None:
        await self._stack.aclose()

    async def publish(self, kind: Kind) -> None:
        await TASKS[kind].enqueue()

    async def publish_batch(self, kind: Kind, count: int) -> None:
        for size in batches(count):
            await worker.enqueue_many([TASKS[kind].enqueue() for _ in range(size)])

    async def round_trip(self) -> None:
        task = await noop.enqueue()
        await task.result(timeout=30)

    async def chord(self, size: int) -> None:
        members = [noop.enqueue() for _ in range(size)]
        for start in range(0, size, BATCH_SIZE):
            await worker.enqueue_many(members[start : start + BATCH_SIZE])
        await tally.enqueue().start(after=[member.id for member in members])

    async def chain(self, length: int) -> None:
        task = step.enqueue(0)
        for _ in range(length - 1):
            task = task.then(step)
        await task

    def worker_argv(self, spec: WorkerSpec) -> list[str]:
        return [console_script("streaq"), "run", f"{__name__}:worker"]
