"""taskiq with taskiq-redis (`RedisStreamBroker`, the one with acknowledgements) or
taskiq-aio-pika (`AioPikaBroker`), the broker URL says which; results in Redis
(`RedisAsyncResultBackend`), as taskiq-redis's README sets it up.

The worker is `taskiq worker` with one worker process, `--max-async-tasks` and
`--max-threadpool-threads` from the workload; on RabbitMQ the prefetch (`qos`, 10 by
default) is raised to the same concurrency, or it would cap the mixed workload at 10 tasks
at a time. `wait_result` polls the backend (every 0.2 s by default); the round trip polls
every 10 ms so that latency measures taskiq rather than the interval. No bulk kiq and no
canvas: the bulk rows are concurrent `kiq` calls.
"""

from __future__ import annotations

from taskiq import AsyncBroker
from taskiq_aio_pika import AioPikaBroker
from taskiq_redis import RedisAsyncResultBackend, RedisStreamBroker

from benchmarks import tasks
from benchmarks.adapters.base import (
    CONCURRENCY,
    Adapter,
    WorkerSpec,
    broker_url,
    console_script,
    env_int,
    gather_batches,
    result_url,
)
from benchmarks.tasks import Kind

CHECK_INTERVAL = 0.01
RESULT_TTL = 3600
AMQP_QUEUE = "taskiq"  # taskiq-aio-pika's default queue


def _broker() -> AsyncBroker:
    url = broker_url()
    if url.startswith("amqp"):
        return AioPikaBroker(url, qos=env_int(CONCURRENCY, 100))
    return RedisStreamBroker(url)


broker = _broker().with_result_backend(
    RedisAsyncResultBackend(redis_url=result_url(), result_ex_time=RESULT_TTL)
)


TASKS = {kind: broker.task(task_name=kind.value)(body) for kind, body in tasks.BODIES.items()}


class TaskiqAdapter(Adapter):
    library = "taskiq"
    batch_method = "asyncio.gather of kiq (no bulk API)"

    async def open(self) -> None:
        await broker.startup()

    async def close(self) -> None:
        await broker.shutdown()

    async def publish(self, kind: Kind) -> None:
        await TASKS[kind].kiq()

    async def publish_batch(self, kind: Kind, count: int) -> None:
        await gather_batches(count, TASKS[kind].kiq)

    async def round_trip(self) -> None:
        task = await TASKS[Kind.NOOP].kiq()
        await task.wait_result(check_interval=CHECK_INTERVAL, timeout=30)

    async def purge(self) -> None:
        if isinstance(broker, AioPikaBroker) and broker.write_channel is not None:
            queue = await broker.write_channel.get_queue(AMQP_QUEUE)
            await queue.purge()

    def worker_argv(self, spec: WorkerSpec) -> list[str]:
        return [
            console_script("taskiq"),
            "worker",
            f"{__name__}:broker",
            "--workers",
            "1",
            "--max-async-tasks",
            str(spec.concurrency),
            "--max-threadpool-threads",
            str(spec.threads),
            "--log-level",
            "WARNING",
        ]
