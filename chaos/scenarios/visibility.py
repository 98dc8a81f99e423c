"""Long tasks against the visibility timeout: `acks_late` tasks that run three times the
timeout, on SQLite and Redis, with two live workers. A worker renews the leases of what it
holds (running or reserved), so no live task may be handed to the other worker: every task
id starts exactly once."""

from __future__ import annotations

import time

from chaos import figures
from chaos.accounting import Unfinished, tally
from chaos.context import Context
from chaos.deployment import Deployment, new_queue, on_redis, on_sqlite
from chaos.report import Outcome, info
from chaos.submit import submit_work
from chaos.waiting import until_none_left

CONCURRENCY = 2
PREFETCH_MULTIPLIER = 2  # some tasks wait reserved behind the running ones, leased too
RUNS_PER_TIMEOUT = 3


async def on_sqlite_broker(ctx: Context) -> Outcome:
    timeout = visibility_timeout(ctx)
    return await long_tasks(ctx, on_sqlite(ctx.directory, new_queue("long"), timeout))


async def on_redis_broker(ctx: Context) -> Outcome:
    redis = await ctx.redis()
    timeout = visibility_timeout(ctx)
    return await long_tasks(ctx, on_redis(redis.url, new_queue("long"), timeout))


def visibility_timeout(ctx: Context) -> float:
    return ctx.size(3.0, 1.0)


async def long_tasks(ctx: Context, deployment: Deployment) -> Outcome:
    timeout = float(deployment.transport["visibility_timeout"])
    seconds = RUNS_PER_TIMEOUT * timeout
    rounds = ctx.size(2, 1)
    count = rounds * 2 * CONCURRENCY + CONCURRENCY  # the last ones wait a whole round reserved
    producer = await ctx.producer(deployment)
    workers = ctx.workers(
        deployment, ["-c", str(CONCURRENCY), "--prefetch-multiplier", str(PREFETCH_MULTIPLIER)]
    )
    for _ in range(2):
        await workers.start()
    records = ctx.records()
    started = time.monotonic()
    expected = await submit_work(producer, count, seconds)
    unfinished = Unfinished(producer, list(expected))
    await until_none_left(unfinished.count, stall=4 * seconds, cap=20 * seconds * (rounds + 1))
    records.refresh()
    found = await tally(producer, deployment.queue, expected)
    twice = [task_id for task_id in expected if records.count("start", task_id) > 1]
    title = (
        f"{count} `acks_late` tasks of {seconds:g} s ({RUNS_PER_TIMEOUT}x the visibility "
        f"timeout of {timeout:g} s) on {deployment.kind}, 2 live workers x concurrency "
        f"{CONCURRENCY}, prefetch multiplier {PREFETCH_MULTIPLIER}"
    )
    outcome = Outcome(ctx.name, title)
    outcome.figures = [
        *figures.delivery(found, records.duplicates("start", set(expected)), 0, CONCURRENCY),
        figures.survival(workers),
        info("drain time", time.monotonic() - started),
    ]
    outcome.notes = figures.delivery_notes(found, workers)
    outcome.notes += [f"started {records.count('start', i)} times: {i}" for i in twice[:5]]
    return outcome
