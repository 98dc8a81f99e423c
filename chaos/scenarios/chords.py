"""A chord under kills: a large chord of `acks_late` members, one of its two workers
SIGKILLed (and replaced) a few times midway. Members redelivered after a kill must not count
twice: the callback runs exactly once, with every result in order."""

from __future__ import annotations

import time

from chaos import figures
from chaos.accounting import tally
from chaos.context import Context
from chaos.deployment import Deployment, new_queue, on_redis, on_sqlite
from chaos.report import Outcome, check, info
from chaos.waiting import until
from taskq import chord, signature

CONCURRENCY = 10
# Long enough that the chord outlasts a few kills and the replacements' start-up (~1 s each).
MEMBER_SECONDS = 0.25
VISIBILITY_TIMEOUT = 3.0
KILL_AT = (0.2, 0.35, 0.5, 0.65)  # fractions of the members done: midway, never near the end
SHORT_KILL_AT = (0.25, 0.5)
CALLBACK_TIMEOUT = 600.0


async def on_sqlite_broker(ctx: Context) -> Outcome:
    return await chord_under_kills(
        ctx, on_sqlite(ctx.directory, new_queue("chord"), VISIBILITY_TIMEOUT)
    )


async def on_redis_broker(ctx: Context) -> Outcome:
    redis = await ctx.redis()
    return await chord_under_kills(ctx, on_redis(redis.url, new_queue("chord"), VISIBILITY_TIMEOUT))


async def chord_under_kills(ctx: Context, deployment: Deployment) -> Outcome:
    size = ctx.size(2000, 300)
    kill_at = ctx.size(KILL_AT, SHORT_KILL_AT)
    producer = await ctx.producer(deployment)
    workers = ctx.workers(deployment, ["-c", str(CONCURRENCY)])
    for _ in range(2):
        await workers.start()
    records = ctx.records()
    members = [
        signature("chaos.work", [n, MEMBER_SECONDS], app=producer).set(task_id=f"member-{n}")
        for n in range(size)
    ]
    callback = signature("chaos.collect", app=producer)
    started = time.monotonic()
    result = await chord(members, callback).apply_async()
    for fraction in kill_at:

        async def done_enough(fraction: float = fraction) -> bool:
            records.refresh()
            return records.distinct("end") >= fraction * size

        await until(done_enough, timeout=CALLBACK_TIMEOUT, interval=0.02)
        victim = workers.kill_one(ctx.rng)
        ctx.log(f"{records.distinct('end')} members done: SIGKILLed worker {victim.pid}")
        await workers.start()
    await until(result.ready, timeout=CALLBACK_TIMEOUT, interval=0.2)

    async def called_twice() -> bool:
        records.refresh()
        return sum(records.counts("callback").values()) > 1

    # A second call would come from a member redelivered once its lease ran out.
    await until(called_twice, timeout=VISIBILITY_TIMEOUT + 1)
    expected = {f"member-{n}": n for n in range(size)}
    found = await tally(producer, deployment.queue, expected)
    calls = sorted(records.counts("callback").elements())
    title = (
        f"a chord of {size:,} `acks_late` members of {MEMBER_SECONDS * 1000:g} ms on "
        f"{deployment.kind}, 2 workers x concurrency {CONCURRENCY}, one SIGKILLed and replaced "
        f"at {', '.join(f'{f:.0%}' for f in kill_at)} of the members done"
    )
    outcome = Outcome(ctx.name, title)
    outcome.figures = [
        *figures.delivery(
            found, records.duplicates("start", set(expected)), workers.kills, CONCURRENCY
        ),
        check("callback runs", len(calls), "1", len(calls) == 1),
        check(
            "callback's results",
            ", ".join(calls) or "none",
            f"{size}:ordered",
            calls == [f"{size}:ordered"],
        ),
        info("callback state", await result.status()),
        figures.survival(workers),
        info("chord time", time.monotonic() - started),
    ]
    outcome.notes = figures.delivery_notes(found, workers)
    return outcome
