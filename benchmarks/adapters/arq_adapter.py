"""arq on Redis.

The worker is `arq WorkerSettings` with `max_jobs` from the workload and arq's logging at
WARNING (`--custom-log-dict`), as every library here runs without a log line per task.
arq polls: the worker looks for jobs every `poll_delay` and `Job.result` for results every
`poll_delay` too, 0.5 s by default. Both are set to 10 ms, or round-trip latency would
measure the polling interval rather than arq. arq jobs are coroutines; a sync function runs
through `run_in_executor` on a thread pool, as arq's documentation shows. No bulk enqueue
and no canvas: the bulk rows are concurrent `enqueue_job` calls.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar

from arq import create_pool, func
from arq.connections import ArqRedis, RedisSettings

from benchmarks import tasks
from benchmarks.adapters.base import (
    CONCURRENCY,
    THREADS,
    Adapter,
    WorkerSpec,
    broker_url,
    console_script,
    env_int,
    gather_batches,
)
from benchmarks.tasks import Kind

POLL_DELAY = 0.01
REDIS = RedisSettings.from_dsn(broker_url())
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler", "level": "WARNING"}},
    "loggers": {"arq": {"handlers": ["stderr"], "level": "WARNING"}},
}


async def sync(ctx: dict[str, Any]) -> int:
    """arq jobs are coroutines: a plain function goes through an executor."""
    return await asyncio.get_running_loop().run_in_executor(ctx["threads"], tasks.sync)


async def startup(ctx: dict[str, Any]) -> None:
    ctx["threads"] = ThreadPoolExecutor(env_int(THREADS, 10))


async def shutdown(ctx: dict[str, Any]) -> None:
    ctx["threads"].shutdown()


class WorkerSettings:
    functions: ClassVar = [
        func(tasks.with_context(tasks.noop), name=Kind.NOOP.value),
        func(tasks.with_context(tasks.sleep), name=Kind.SLEEP.value),
        func(sync, name=Kind.SYNC.value),
    ]
    redis_settings = REDIS
    max_jobs = env_int(CONCURRENCY, 100)
    poll_delay = POLL_DELAY
    on_startup = startup
    on_shutdown = shutdown


class ArqAdapter(Adapter):
    library = "arq"
    batch_method = "asyncio.gather of enqueue_job (no bulk API)"

    async def open(self) -> None:
        self.pool: ArqRedis = await create_pool(REDIS)

    async def close(self) -> None:
        await self.pool.aclose()

    async def publish(self, kind: Kind) -> None:
        await self.pool.enqueue_job(kind.value)

    async def publish_batch(self, kind: Kind, count: int) -> None:
        await gather_batches(count, lambda: self.pool.enqueue_job(kind.value))

    async def round_trip(self) -> None:
        job = await self.pool.enqueue_job("noop")
        assert job is not None
        await job.result(timeout=30, poll_delay=POLL_DELAY)

    def worker_argv(self, spec: WorkerSpec) -> list[str]:
        settings = f"{__name__}.WorkerSettings"
        return [console_script("arq"), settings, "--custom-log-dict", f"{__name__}.LOGGING"]
