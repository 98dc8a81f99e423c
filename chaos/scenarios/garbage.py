"""Garbage in: mutated envelopes published raw on every broker, garbage in the Redis
broker's keys, rows of the wrong types in the SQLite broker's table. The README: bad input
never kills the worker and never vanishes. Every input must end up run (counted by the task)
or in the dead-letter queue, nothing may be left in the queue, and the worker must live on
and run a valid task published after the garbage."""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable, Sequence

from chaos import figures, logs
from chaos.context import Context
from chaos.deployment import (
    Deployment,
    new_queue,
    on_rabbitmq,
    on_redis,
    on_sqlite,
    sqlite_database,
)
from chaos.garbage.accounting import Accounting, account, reasons
from chaos.garbage.envelopes import envelope_inputs
from chaos.garbage.inputs import Input
from chaos.garbage.redis_keys import key_garbage, write_key_garbage
from chaos.garbage.sqlite_rows import row_garbage
from chaos.garbage.writers import RabbitMQWriter, RedisWriter, SQLiteWriter
from chaos.records import Records
from chaos.report import Figure, Outcome, check, info
from chaos.waiting import until, until_none_left
from taskq import TaskQ
from taskq.brokers.base import DeadLetter

CONCURRENCY = 8
VISIBILITY_TIMEOUT = 2.0  # an unsettled message comes back soon: it shows as one left behind
STALL = 20.0
CAP = 900.0
CANARY_TIMEOUT = 60.0
SHOWN = 8  # unaccounted inputs quoted in the notes


def token(ctx: Context) -> str:
    return f"{ctx.rng.getrandbits(24):06x}"


async def envelopes_on_sqlite(ctx: Context) -> Outcome:
    deployment = on_sqlite(ctx.directory, new_queue("garbage"), VISIBILITY_TIMEOUT)
    writer = SQLiteWriter(sqlite_database(ctx.directory), deployment.queue)
    return await envelopes(ctx, deployment, writer.write, "INSERTed into taskq_messages")


async def envelopes_on_redis(ctx: Context) -> Outcome:
    redis = await ctx.redis()
    deployment = on_redis(redis.url, new_queue("garbage"), VISIBILITY_TIMEOUT)
    writer = RedisWriter(deployment.broker_url, deployment.queue)
    return await envelopes(ctx, deployment, writer.write, "XADDed to the queue's stream")


async def envelopes_on_rabbitmq(ctx: Context) -> Outcome:
    rabbitmq = await ctx.rabbitmq.get()
    deployment = on_rabbitmq(rabbitmq.url, ctx.directory, new_queue("garbage"))
    writer = RabbitMQWriter(deployment.broker_url, deployment.queue)
    return await envelopes(ctx, deployment, writer.write, "published to the queue")


async def envelopes(
    ctx: Context,
    deployment: Deployment,
    write: Callable[[Sequence[bytes]], Awaitable[None]],
    how: str,
) -> Outcome:
    inputs = envelope_inputs(ctx.size(2000, 300), deployment.queue, token(ctx), ctx.rng)
    title = f"{len(inputs):,} mutated envelopes {how} raw, on {deployment.kind}"
    return await garbage_in(ctx, deployment, inputs, lambda: write([i.body for i in inputs]), title)


async def redis_keys(ctx: Context) -> Outcome:
    redis = await ctx.redis()
    deployment = on_redis(redis.url, new_queue("garbage"), VISIBILITY_TIMEOUT)
    garbage = key_garbage(deployment.queue, ctx.size(50, 10), token(ctx), ctx.rng)
    band = ctx.rng.randrange(10)

    async def write() -> None:
        await write_key_garbage(deployment.broker_url, deployment.queue, garbage, band)

    title = (
        f"{len(garbage.inputs)} entries written into the Redis broker's stream (band {band}) and "
        f"delayed set, and {len(set(garbage.lease_members))} garbage lease members"
    )
    return await garbage_in(ctx, deployment, garbage.inputs, write, title)


async def sqlite_rows(ctx: Context) -> Outcome:
    deployment = on_sqlite(ctx.directory, new_queue("garbage"), VISIBILITY_TIMEOUT)
    inputs, rows = row_garbage(deployment.queue, ctx.size(50, 10), token(ctx), ctx.rng)
    writer = SQLiteWriter(sqlite_database(ctx.directory), deployment.queue)
    title = f"{len(rows)} rows of the wrong column types INSERTed into taskq_messages"
    return await garbage_in(ctx, deployment, inputs, lambda: writer.write_rows(rows), title)


async def garbage_in(
    ctx: Context,
    deployment: Deployment,
    inputs: list[Input],
    inject: Callable[[], Awaitable[None]],
    title: str,
) -> Outcome:
    """Start a worker, prove it runs a valid task, `inject` the garbage, publish a valid task
    after it, then wait until every input is accounted for and the queue is empty (or
    nothing has moved for STALL seconds)."""
    producer = await ctx.producer(deployment)
    workers = ctx.workers(deployment, ["-c", str(CONCURRENCY)])
    await workers.start()
    records = ctx.records()
    if not await canary(producer, records, f"canary-before-{token(ctx)}"):
        raise RuntimeError(f"the worker ran no valid task before the garbage: {workers.logs()}")
    ctx.log(f"writing {len(inputs)} inputs")
    await inject()
    after = f"canary-after-{token(ctx)}"
    await producer.send_task("chaos.target_late", [after], headers={"chaos_mark": after})
    broker = await producer.connected_broker()

    async def remaining() -> int:
        records.refresh()
        found = account(inputs, records.counts("ran"), await letters(producer, deployment.queue))
        left = await broker.queue_length(deployment.queue)
        return len(found.unaccounted) + left + (records.count("ran", after) == 0)

    await until_none_left(remaining, stall=STALL, cap=CAP, interval=1.0)
    survival = figures.survival(workers)
    workers.stop_all()
    left = await broker.queue_length(deployment.queue)
    records.refresh()
    dead = await letters(producer, deployment.queue)
    found = account(inputs, records.counts("ran"), dead)
    log = workers.logs()
    ran_after = records.count("ran", after) > 0
    outcome = Outcome(ctx.name, title)
    outcome.figures = [
        *garbage_figures(len(inputs), found, left),
        info("tracebacks in the worker's log", log.count(logs.TRACEBACK)),
        check("a valid task published after the garbage ran", ran_after, "yes", ran_after),
        survival,
    ]
    outcome.notes = garbage_notes(found, dead, log)
    outcome.notes += [
        f"worker exited by itself: {w.describe()}" for w in workers.died_by_themselves
    ]
    return outcome


async def canary(app: TaskQ, records: Records, mark: str) -> bool:
    """Publish a valid task; True once it ran."""
    await app.send_task("chaos.target_late", [mark], headers={"chaos_mark": mark})

    async def ran() -> bool:
        records.refresh()
        return records.count("ran", mark) > 0

    return await until(ran, timeout=CANARY_TIMEOUT)


async def letters(app: TaskQ, queue: str) -> list[DeadLetter]:
    broker = await app.connected_broker()
    return await broker.dead_letters(queue, limit=max(1, await broker.dead_letter_length(queue)))


def garbage_figures(count: int, found: Accounting, left: int) -> list[Figure]:
    return [
        info("inputs", count),
        info("ran (counted by the task)", found.ran),
        info("dead-lettered", found.dead_lettered),
        check(
            "unaccounted for (neither ran nor dead-lettered)",
            len(found.unaccounted),
            "0",
            not found.unaccounted,
        ),
        check("left in the queue (once the worker stopped)", left, "0", left == 0),
        info("inputs that ran more than once", found.ran_more_than_once),
    ]


def garbage_notes(found: Accounting, dead: list[DeadLetter], log: str) -> list[str]:
    notes = []
    if found.unaccounted:
        kinds = Counter(one.kind for one in found.unaccounted)
        shown = ", ".join(f"{kind} x{n}" for kind, n in kinds.most_common(SHOWN))
        notes.append(f"unaccounted by kind: {shown}")
        notes += [f"unaccounted: {one.mark} ({one.kind})" for one in found.unaccounted[:SHOWN]]
    common = ", ".join(f"{n}x `{reason}`" for reason, n in reasons(dead).most_common(5))
    if common:
        notes.append(f"most common dead-letter reasons: {common}")
    notes += [f"worker log:\n```\n{excerpt}\n```" for excerpt in logs.tracebacks(log)]
    return notes
