"""taskq: `taskq worker` on every broker; an in-process `Worker` for `memory://`.

The memory broker lives in one process, so its worker runs in the timer's process (the
figures are that process's). The result store follows the broker, as by default, except on
RabbitMQ, where it is the same Redis that the other libraries' AMQP rows store results in.
The blocking publish is `delay_sync()`, run on `taskq.sync`'s loop thread. Bulk publishing is
a `group`, which sends its members in one `publish_many`. Chord and chain are reported as not
available while `taskq` has no `chord` / `chain`.
"""

from __future__ import annotations

import os
from contextlib import AsyncExitStack
from pathlib import Path

import taskq
from benchmarks import tasks
from benchmarks.adapters.base import (
    MULTIPROCESS_WORKLOADS,
    Adapter,
    WorkerHandle,
    WorkerSpec,
    batches,
    broker_url,
    console_script,
    result_url,
)
from benchmarks.tasks import Kind
from taskq.testing import running_worker


def _backend(url: str) -> str | None:
    return result_url() if url.startswith("amqp") else None


app = taskq.TaskQ("bench", broker=broker_url(), backend=_backend(broker_url()))


TASKS = {kind: app.task(name=kind.value)(body) for kind, body in tasks.BODIES.items()}
step = app.task(name="step")(tasks.step)
tally = app.task(name="tally")(tasks.tally)


class InProcessWorker(WorkerHandle):
    """A `Worker` in this event loop: pausing is a warm shutdown, resuming a new worker."""

    def __init__(self, spec: WorkerSpec) -> None:
        self.spec = spec
        self._stack = AsyncExitStack()

    async def resume(self) -> None:
        options = {"concurrency": self.spec.concurrency, "threads": self.spec.threads}
        await self._stack.enter_async_context(running_worker(app, **options))

    async def pause(self) -> None:
        await self._stack.aclose()

    async def stop(self) -> None:
        await self._stack.aclose()

    def pids(self) -> list[int]:
        return [os.getpid()]

    def alive(self) -> bool:
        return True


class TaskqAdapter(Adapter):
    library = "taskq"
    multiprocess = True
    batch_method = "group(...).apply_async() (one publish_many per group)"

    def unsupported(self, workload: str) -> str | None:
        if workload in ("chord", "chain") and not hasattr(taskq, workload):
            return f"taskq has no canvas yet (taskq.{workload})"
        if workload in MULTIPROCESS_WORKLOADS and app.broker_url.startswith("memory://"):
            return "the memory broker lives in one process"
        return None

    async def open(self) -> None:
        await app.connect()

    async def close(self) -> None:
        await app.close()

    async def publish(self, kind: Kind) -> None:
        await TASKS[kind].delay()

    def publish_sync(self, kind: Kind) -> None:
        TASKS[kind].delay_sync()

    async def publish_batch(self, kind: Kind, count: int) -> None:
        for size in batches(count):
            await taskq.group(TASKS[kind].s() for _ in range(size)).apply_async()

    async def round_trip(self) -> None:
        await (await TASKS[Kind.NOOP].delay()).get(timeout=30)

    async def purge(self) -> None:
        # Flushing Redis between runs empties no RabbitMQ queue.
        await (await app.connected_broker()).purge(app.conf.task_default_queue)

    async def chord(self, size: int) -> None:
        members = [TASKS[Kind.NOOP].s() for _ in range(size)]
        await taskq.chord(members, tally.s()).apply_async()

    async def chain(self, length: int) -> None:
        await taskq.chain(*(step.s() for _ in range(length))).apply_async()

    def worker_argv(self, spec: WorkerSpec) -> list[str]:
        return [
            console_script("taskq"),
            "worker",
            "-A",
            f"{__name__}:app",
            "-c",
            str(spec.concurrency),
            "--threads",
            str(spec.threads),
            "--loglevel",
            "warning",
            "--loop",  # asyncio's own loop, as every peer here runs on (uvloop is opt-in)
            "asyncio",
            "--processes",
            str(spec.processes),
            "--pool",
            spec.pool,
        ]

    async def start_worker(self, spec: WorkerSpec, log: Path) -> WorkerHandle:
        if not app.broker_url.startswith("memory://"):
            return await super().start_worker(spec, log)
        worker = InProcessWorker(spec)
        await worker.resume()
        return worker
