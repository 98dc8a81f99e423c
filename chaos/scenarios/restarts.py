"""Server restarts mid-drain: publishers keep publishing and a worker keeps draining while
the broker goes down and comes back. Everything a publish acknowledged must end SUCCESS.

- Redis with an append-only file (`appendfsync always`), stopped with SIGTERM or killed
  with SIGKILL, then started again on its data.
- A RabbitMQ node stopped and started again (durable queues, persistent messages).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from functools import partial

import anyio

from chaos import figures
from chaos.accounting import Unfinished, tally
from chaos.context import Context
from chaos.deployment import Deployment, new_queue, on_rabbitmq, on_redis
from chaos.records import Records
from chaos.report import Outcome, info
from chaos.servers import rabbitmq_answers, redis_answers
from chaos.waiting import until, until_none_left

CONCURRENCY = 8
TASK_SECONDS = 0.01
PUBLISHERS = 2
PUBLISH_PAUSE = 0.005  # between one publisher's publishes
VISIBILITY_TIMEOUT = 5.0
AMQP_PUBLISH_TIMEOUT = 3.0  # a publish during the outage fails after this, then the next one
STEADY = (3.0, 2.0)  # full, short: seconds of publishing and draining around each restart
REDIS_OUTAGE = 1.0
ANSWER_POLL = 0.02
BACK_TIMEOUT = 120.0  # for the server to go silent, then to answer again
NOTICE_TIMEOUT = 5.0  # the server answers once the restart returned: a poll or two
STALL = 60.0
CAP = 600.0


@dataclass
class Published:
    """What the publishers sent: acknowledged ids with their due results, refused publishes."""

    acknowledged: dict[str, int] = field(default_factory=dict)
    refused: int = 0
    errors: set[str] = field(default_factory=set)
    numbers: Iterator[int] = field(default_factory=itertools.count)


async def redis_sigterm(ctx: Context) -> Outcome:
    return await redis_restarts(ctx, crash=False)


async def redis_sigkill(ctx: Context) -> Outcome:
    return await redis_restarts(ctx, crash=True)


async def redis_restarts(ctx: Context, *, crash: bool) -> Outcome:
    redis = await ctx.redis(aof=True)
    deployment = on_redis(redis.url, new_queue("restart"), VISIBILITY_TIMEOUT)
    how = "SIGKILL" if crash else "SIGTERM"

    async def restart() -> None:
        await anyio.to_thread.run_sync(redis.kill if crash else redis.stop)
        await anyio.sleep(REDIS_OUTAGE)
        await anyio.to_thread.run_sync(redis.start)

    what = f"Redis (AOF, appendfsync always) stopped by {how} and started again"
    return await restarts(ctx, deployment, Restart(restart, partial(redis_answers, redis)), what)


async def rabbitmq_restart(ctx: Context) -> Outcome:
    rabbitmq = await ctx.private_rabbitmq()
    queue = new_queue("restart")
    deployment = on_rabbitmq(
        rabbitmq.url, ctx.directory, queue, publish_timeout=AMQP_PUBLISH_TIMEOUT
    )

    async def restart() -> None:
        await anyio.to_thread.run_sync(rabbitmq.stop)
        await anyio.to_thread.run_sync(rabbitmq.start)

    what = "a RabbitMQ node stopped and started again"
    return await restarts(
        ctx, deployment, Restart(restart, partial(rabbitmq_answers, rabbitmq)), what
    )


@dataclass(frozen=True)
class Restart:
    """How to restart the server, and how to tell it answers (a blocking look)."""

    run: Callable[[], Awaitable[None]]
    answers: Callable[[], bool]

    async def watched(self) -> tuple[float, float]:
        """Restart; returns when it began and when the server first answered again, which
        may be before `run` returns (RabbitMQ answers AMQP before it reports startup)."""
        down = time.time()
        back: list[float] = []
        returned = anyio.Event()
        async with anyio.create_task_group() as watching:
            watching.start_soon(self._note_return, back, returned)
            await self.run()
            with anyio.move_on_after(NOTICE_TIMEOUT):
                await returned.wait()
            watching.cancel_scope.cancel()
        return down, back[0] if back else time.time()

    async def _note_return(self, back: list[float], returned: anyio.Event) -> None:
        async def answering() -> bool:
            return await anyio.to_thread.run_sync(self.answers)

        async def silent() -> bool:
            return not await answering()

        if await until(silent, BACK_TIMEOUT, ANSWER_POLL) and await until(
            answering, BACK_TIMEOUT, ANSWER_POLL
        ):
            back.append(time.time())
            returned.set()


async def restarts(ctx: Context, deployment: Deployment, restart: Restart, what: str) -> Outcome:
    """`restart` the server `ctx.size(3, 1)` times between steady phases of publishing and
    draining, then account for every acknowledged publish."""
    count = ctx.size(3, 1)
    steady = ctx.size(*STEADY)
    times = "once" if count == 1 else f"{count} times"
    producer = await ctx.producer(deployment)
    workers = ctx.workers(deployment, ["-c", str(CONCURRENCY)])
    await workers.start()
    records = ctx.records()
    published = Published()
    outages: list[tuple[float, float]] = []  # (down, back) epoch seconds
    async with anyio.create_task_group() as publishing:
        for _ in range(PUBLISHERS):
            publishing.start_soon(publish_forever, ctx, deployment, published)
        for _ in range(count):
            await anyio.sleep(steady)
            outages.append(await restart.watched())
            ctx.log(f"server back after {outages[-1][1] - outages[-1][0]:.1f} s")
        await anyio.sleep(steady)
        publishing.cancel_scope.cancel()
    ctx.log(f"{len(published.acknowledged)} publishes acknowledged, {published.refused} refused")
    unfinished = Unfinished(producer, list(published.acknowledged))
    await until_none_left(unfinished.count, stall=STALL, cap=CAP)
    records.refresh()
    found = await tally(producer, deployment.queue, published.acknowledged)
    duplicates = records.duplicates("start", set(published.acknowledged))
    title = (
        f"{what} {times} while {PUBLISHERS} publishers publish `acks_late` tasks of "
        f"{TASK_SECONDS * 1000:g} ms one at a time and a worker (concurrency {CONCURRENCY}) "
        f"drains them, on {deployment.kind}"
    )
    outcome = Outcome(ctx.name, title)
    outcome.figures = [
        *figures.delivery(found, duplicates, count, CONCURRENCY, what="restarts"),
        info("publishes refused (not acknowledged)", published.refused),
        info("outage (down to answering again)", outage_figure(outages)),
        figures.recovery(recoveries(records, outages), "from the server answering again"),
        figures.survival(workers),
    ]
    outcome.notes = figures.delivery_notes(found, workers)
    outcome.notes += [f"publish error: {error}" for error in sorted(published.errors)]
    return outcome


async def publish_forever(ctx: Context, deployment: Deployment, published: Published) -> None:
    """Publish one task at a time on a connection of this publisher's own, until cancelled."""
    app = await ctx.producer(deployment)
    while True:
        n = next(published.numbers)
        message = app.build_message("chaos.work", [n, TASK_SECONDS])
        try:
            await app.send_message(message)
        except Exception as exc:  # the broker is down: this publish was not acknowledged
            published.refused += 1
            published.errors.add(f"{type(exc).__name__}: {exc}")
        else:
            published.acknowledged[message.id] = n
        await anyio.sleep(PUBLISH_PAUSE)


def outage_figure(outages: list[tuple[float, float]]) -> str:
    return ", ".join(f"{back - down:.1f} s" for down, back in outages)


def recoveries(records: Records, outages: list[tuple[float, float]]) -> list[float]:
    return [
        done - back for _, back in outages if (done := records.next_task_done(back)) is not None
    ]
