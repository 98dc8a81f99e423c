"""Celery on Redis or RabbitMQ (the broker URL says which), results in Redis.

Celery has no async tasks: its no-op and sleeping tasks are plain functions. The worker is
`celery worker` in one process: `--pool solo` for no-op tasks (no forks; the task runs in the
consumer's thread), `--pool threads` where tasks block (sleep, sync, hashing in threads), and
`--pool prefork` (a child per core, or `--concurrency N`) where the workload wants processes.
Its producer API is synchronous, so the adapter's calls block the timer's event loop, which
has nothing else to do meanwhile. Bulk publishing is `group(...).apply_async()`, Celery's API
for many calls (it publishes the messages one by one over one connection).
"""

from __future__ import annotations

from celery import Celery, chain, chord, group

from benchmarks import tasks
from benchmarks.adapters.base import (
    Adapter,
    WorkerSpec,
    batches,
    broker_url,
    console_script,
    result_url,
)
from benchmarks.tasks import Kind

app = Celery("bench", broker=broker_url(), backend=result_url())
app.conf.broker_connection_retry_on_startup = True


TASKS = {kind: app.task(name=kind.value)(body) for kind, body in tasks.BLOCKING.items()}
noop = TASKS[Kind.NOOP]
step = app.task(name="step")(tasks.blocking_step)
tally = app.task(name="tally")(tasks.blocking_tally)


class CeleryAdapter(Adapter):
    library = "celery"
    multiprocess = True
    batch_method = "group"

    async def close(self) -> None:
        app.close()

    async def publish(self, kind: Kind) -> None:
        TASKS[kind].delay()

    async def publish_batch(self, kind: Kind, count: int) -> None:
        for size in batches(count):
            group(TASKS[kind].si() for _ in range(size)).apply_async()

    async def round_trip(self) -> None:
        noop.delay().get(timeout=30)

    async def chord(self, size: int) -> None:
        chord(noop.si() for _ in range(size))(tally.s())

    async def chain(self, length: int) -> None:
        chain(step.s(0), *(step.s() for _ in range(length - 1))).apply_async()

    async def purge(self) -> None:
        app.control.purge()

    def worker_argv(self, spec: WorkerSpec) -> list[str]:
        argv = [console_script("celery"), "-A", f"{__name__}:app", "worker", "-l", "warning"]
        if spec.processes > 1:  # prefork children consume and run: Celery's process model
            return [*argv, "--pool", "prefork", "--concurrency", str(spec.processes)]
        if spec.pool == "process":
            return [*argv, "--pool", "prefork"]  # a child per core
        if spec.kind is Kind.NOOP:
            return [*argv, "--pool", "solo"]
        threads = spec.threads if spec.kind is Kind.SYNC else spec.concurrency
        return [*argv, "--pool", "threads", "--concurrency", str(threads)]
