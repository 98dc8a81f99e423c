"""Kill storm: `acks_late` tasks drained by two workers while one of them is SIGKILLed every
2-4 s and replaced. Nothing may be lost, everything must end SUCCESS, and a task may run
twice only if it was running on a killed worker: duplicates <= kills x concurrency."""

from __future__ import annotations

import time

import anyio

from chaos import figures
from chaos.accounting import Unfinished, tally
from chaos.context import Context
from chaos.deployment import Deployment, new_queue, on_rabbitmq, on_redis, on_sqlite
from chaos.processes import Processes
from chaos.report import Outcome, info
from chaos.submit import submit_work
from chaos.waiting import until_none_left

CONCURRENCY = 4
TASK_SECONDS = 0.01
VISIBILITY_TIMEOUT = 3.0  # SQLite and Redis: a killed worker's leases come back this soon
KILL_INTERVAL = (2.0, 4.0)
FIRST_KILL = 1.0  # seconds after both workers are ready: a short run sees kills too
STALL = 60.0  # seconds without progress before the drain counts as stuck
CAP = 1200.0


async def on_sqlite_broker(ctx: Context) -> Outcome:
    return await storm(ctx, on_sqlite(ctx.directory, new_queue("storm"), VISIBILITY_TIMEOUT))


async def on_redis_broker(ctx: Context) -> Outcome:
    redis = await ctx.redis()
    return await storm(ctx, on_redis(redis.url, new_queue("storm"), VISIBILITY_TIMEOUT))


async def on_classic_queue(ctx: Context) -> Outcome:
    rabbitmq = await ctx.rabbitmq.get()
    return await storm(ctx, on_rabbitmq(rabbitmq.url, ctx.directory, new_queue("storm")))


async def on_quorum_queue(ctx: Context) -> Outcome:
    rabbitmq = await ctx.rabbitmq.get()
    queue = new_queue("storm")
    return await storm(ctx, on_rabbitmq(rabbitmq.url, ctx.directory, queue, quorum=True))


async def storm(ctx: Context, deployment: Deployment) -> Outcome:
    count = ctx.size(10_000, 1_000)
    leased = deployment.kind in ("sqlite", "redis")
    leases = f", visibility_timeout {VISIBILITY_TIMEOUT:g} s" if leased else ""
    title = (
        f"{count:,} `acks_late` tasks of {TASK_SECONDS * 1000:g} ms on {deployment.kind}, "
        f"2 workers x concurrency {CONCURRENCY}, one SIGKILLed every "
        f"{KILL_INTERVAL[0]:g}-{KILL_INTERVAL[1]:g} s and replaced{leases}"
    )
    producer = await ctx.producer(deployment)
    expected = await submit_work(producer, count, TASK_SECONDS)
    workers = ctx.workers(deployment, ["-c", str(CONCURRENCY)])
    records = ctx.records()
    started = time.monotonic()
    for _ in range(2):
        await workers.start()
    kills: list[float] = []
    unfinished = Unfinished(producer, list(expected))
    async with anyio.create_task_group() as storming:
        storming.start_soon(kill_and_replace, ctx, workers, kills)
        drained = await until_none_left(unfinished.count, stall=STALL, cap=CAP)
        storming.cancel_scope.cancel()
    drain_seconds = time.monotonic() - started
    ctx.log(f"{'drained' if drained else 'stuck'} after {drain_seconds:.0f} s, {len(kills)} kills")
    records.refresh()
    found = await tally(producer, deployment.queue, expected)
    recoveries = [done - kill for kill in kills if (done := records.next_task_done(kill))]
    outcome = Outcome(ctx.name, title)
    outcome.figures = [
        *figures.delivery(
            found, records.duplicates("start", set(expected)), len(kills), CONCURRENCY
        ),
        info("workers SIGKILLed", len(kills)),
        figures.recovery(recoveries, "from a kill"),
        figures.survival(workers),
        info("drain time", drain_seconds),
    ]
    outcome.notes = figures.delivery_notes(found, workers)
    return outcome


async def kill_and_replace(ctx: Context, workers: Processes, kills: list[float]) -> None:
    """SIGKILL a worker and start another, then again every 2-4 s from the last kill."""
    pause = FIRST_KILL
    while True:
        await anyio.sleep(max(pause, 0.0))
        victim = workers.kill_one(ctx.rng)
        last_kill = time.monotonic()
        kills.append(time.time())
        ctx.log(f"SIGKILLed worker {victim.pid} (kill {len(kills)})")
        await workers.start()
        pause = ctx.rng.uniform(*KILL_INTERVAL) - (time.monotonic() - last_kill)
