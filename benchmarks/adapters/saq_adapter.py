"""SAQ on Redis.

The worker is `saq settings`, concurrency from the workload. SAQ runs a plain function in its
own thread pool (Python's default size, min(32, CPUs + 4): not configurable). No bulk enqueue
(`Queue.map` also waits for the results) and no canvas: the bulk rows are concurrent
`enqueue` calls. The round trip is `Queue.apply`, which polls for the result, every 10 ms
here (0.5 s by default). `Job.refresh(until_complete=...)` listens on pub/sub instead, but
it subscribes after reading the job's state, and in a run of 1,000 round trips one
completion fell between the two and the wait hung until its timeout.
"""

from __future__ import annotations

from saq import Queue

from benchmarks import tasks
from benchmarks.adapters.base import (
    CONCURRENCY,
    Adapter,
    WorkerSpec,
    broker_url,
    console_script,
    env_int,
    gather_batches,
)
from benchmarks.tasks import Kind

POLL_INTERVAL = 0.01
queue = Queue.from_url(broker_url())


settings = {
    "queue": queue,
    "functions": [(kind.value, tasks.with_context(body)) for kind, body in tasks.BODIES.items()],
    "concurrency": env_int(CONCURRENCY, 100),
}


class SaqAdapter(Adapter):
    library = "saq"
    batch_method = "asyncio.gather of enqueue (no bulk API)"

    async def open(self) -> None:
        await queue.connect()

    async def close(self) -> None:
        await queue.disconnect()

    async def publish(self, kind: Kind) -> None:
        await queue.enqueue(kind.value)

    async def publish_batch(self, kind: Kind, count: int) -> None:
        await gather_batches(count, lambda: queue.enqueue(kind.value))

    async def round_trip(self) -> None:
        await queue.apply(Kind.NOOP.value, timeout=30, poll_interval=POLL_INTERVAL)

    def worker_argv(self, spec: WorkerSpec) -> list[str]:
        return [console_script("saq"), f"{__name__}.settings"]
