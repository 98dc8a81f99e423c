"""Dramatiq on Redis or RabbitMQ (the broker URL says which: its `RedisBroker`, or its
`RabbitmqBroker` on pika, which publishes without publisher confirms, its default), results in
Redis (the `Results` middleware), async actors through the `AsyncIO` middleware, chords
through `GroupCallbacks`.

The worker is `dramatiq module --processes 1`. Dramatiq runs each message in a worker
thread; an async actor's thread waits while the coroutine runs on the middleware's event
loop, so threads bound concurrency: 8 threads (Dramatiq's default) for no-op tasks, the
workload's concurrency for sleeping ones, its thread count for sync ones. Its producer API
is synchronous (see the Celery adapter). Bulk publishing is `group(...).run()`, which sends
the messages one by one. The chord is a group with a completion callback, which runs after
the members but does not receive their results; the chain is a `pipeline`, which nests
each next message inside the one before (1,000 links exceed Python's recursion limit when
the first message is encoded).
"""

from __future__ import annotations

import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import AsyncIO, GroupCallbacks
from dramatiq.rate_limits.backends import RedisBackend as RedisRateLimiterBackend
from dramatiq.results import Results
from dramatiq.results.backends import RedisBackend as RedisResultBackend

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

DEFAULT_THREADS = 8
RESULT_TIMEOUT_MS = 30_000
# Not Dramatiq's "default": on RabbitMQ, taskq's queue of that name has other arguments.
QUEUE = "dramatiq"

broker: dramatiq.Broker = (
    RabbitmqBroker(url=broker_url())
    if broker_url().startswith(("amqp://", "amqps://"))
    else RedisBroker(url=broker_url())
)
broker.add_middleware(Results(backend=RedisResultBackend(url=result_url())))
broker.add_middleware(AsyncIO())
broker.add_middleware(GroupCallbacks(RedisRateLimiterBackend(url=result_url())))
dramatiq.set_broker(broker)


TASKS = {
    kind: dramatiq.actor(body, actor_name=kind.value, queue_name=QUEUE, store_results=True)
    for kind, body in tasks.BODIES.items()
}
noop = TASKS[Kind.NOOP]
step = dramatiq.actor(tasks.step, actor_name="step", queue_name=QUEUE, store_results=True)
tally = dramatiq.actor(tasks.tally, actor_name="tally", queue_name=QUEUE)


class DramatiqAdapter(Adapter):
    library = "dramatiq"
    batch_method = "group(...).run()"

    async def close(self) -> None:
        broker.close()

    async def publish(self, kind: Kind) -> None:
        TASKS[kind].send()

    async def purge(self) -> None:
        broker.flush_all()

    async def publish_batch(self, kind: Kind, count: int) -> None:
        for size in batches(count):
            dramatiq.group(TASKS[kind].message() for _ in range(size)).run()

    async def round_trip(self) -> None:
        noop.send().get_result(block=True, timeout=RESULT_TIMEOUT_MS)

    async def chord(self, size: int) -> None:
        members = dramatiq.group(noop.message() for _ in range(size))
        members.add_completion_callback(tally.message())
        members.run()

    async def chain(self, length: int) -> None:
        links = [step.message(0), *(step.message() for _ in range(length - 1))]
        dramatiq.pipeline(links).run()

    def worker_argv(self, spec: WorkerSpec) -> list[str]:
        threads = {Kind.NOOP: DEFAULT_THREADS, Kind.SLEEP: spec.concurrency}
        count = threads.get(spec.kind, spec.threads)
        return [console_script("dramatiq"), __name__, "--processes", "1", "--threads", str(count)]
