"""Beat fail-over: three `taskq beat` processes share the store, one entry fires every second
into a worker, and the leader is SIGKILLed (a new standby is started each time). The README: a
standby takes over within one lease TTL of the leader's death; each tick is published once;
after downtime an entry fires once for the missed period (the catch-up rule), so the only
ticks missing are those of the outage but its latest."""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from datetime import datetime

import anyio

from chaos import figures
from chaos.context import Context
from chaos.deployment import Deployment, new_queue, on_redis, on_sqlite
from chaos.processes import Processes, TaskqProcess
from chaos.records import Records
from chaos.report import Outcome, check, info
from chaos.waiting import until

BEATS = 3
LEASE_TTL = 3.0
PERIOD = 1.0
TICKS_AROUND_A_KILL = (3, 2)  # full, short: ticks seen before each kill and after each takeover
LEADS, STANDS_BY = "is the leader", "stands by"
WAIT = 60.0  # for a leader, or for ticks: generous, a slow machine must not fail
SLACK = 0.25  # seconds of measurement lag allowed when placing a tick against a takeover
# The lease runs one TTL from the leader's last renewal, which is at most its death: a standby
# leads a few milliseconds past that at best (a store round trip, the event loop's timer).
TAKEOVER_TOLERANCE = 0.1
VISIBILITY_TIMEOUT = 5.0


@dataclass(frozen=True)
class Takeover:
    killed_at: float  # just before the SIGKILL
    led_at: float  # the time stamp of the successor's "is the leader" log line

    @property
    def seconds(self) -> float:
        return self.led_at - self.killed_at


async def on_sqlite_store(ctx: Context) -> Outcome:
    return await failover(ctx, on_sqlite(ctx.directory, new_queue("beat"), VISIBILITY_TIMEOUT))


async def on_redis_store(ctx: Context) -> Outcome:
    redis = await ctx.redis()
    return await failover(ctx, on_redis(redis.url, new_queue("beat"), VISIBILITY_TIMEOUT))


async def failover(ctx: Context, deployment: Deployment) -> Outcome:
    kills = ctx.size(5, 2)
    ticks_around = ctx.size(*TICKS_AROUND_A_KILL)
    workers = ctx.workers(deployment, ["-c", "4"])
    await workers.start()
    records = ctx.records()
    schedule = {"tick": {"task": "chaos.tick", "schedule": PERIOD}}
    beats = ctx.beats(deployment, beat_schedule=schedule, beat_lease_ttl=LEASE_TTL)
    for _ in range(BEATS):
        await start_out_of_step(ctx, beats)
    takeovers: list[Takeover] = []
    for _ in range(kills):
        leader = await wait_for_leader(beats)
        await wait_for_ticks(records, ticks_around)
        await anyio.sleep(ctx.rng.uniform(0, PERIOD))  # at any point of the leader's loop
        killed_at = time.time()
        beats.kill(leader)
        ctx.log(f"SIGKILLed the leader, beat {leader.pid}")
        successor = await wait_for_leader(beats)
        takeovers.append(Takeover(killed_at, led_at(successor)))
        ctx.log(f"beat {successor.pid} leads {takeovers[-1].seconds:.2f} s after the kill")
        await start_out_of_step(ctx, beats)
        await wait_for_ticks(records, ticks_around)
    records.refresh()
    ticks = records.counts("tick")
    scheduled = sorted(float(tick) for tick in ticks)
    twice = sorted(float(tick) for tick, count in ticks.items() if count > 1)
    skipped = skipped_beyond_catch_up(scheduled, takeovers)
    slowest = max(takeover.seconds for takeover in takeovers)
    each = ", ".join(f"{takeover.seconds:.2f}" for takeover in takeovers)
    died = beats.died_by_themselves
    gap = max((b - a for a, b in itertools.pairwise(scheduled)), default=0.0)
    title = (
        f"{BEATS} `taskq beat` processes on a {deployment.kind} store (beat_lease_ttl "
        f"{LEASE_TTL:g} s), an entry every {PERIOD:g} s; the leader SIGKILLed {kills} times, "
        "each time a new standby started"
    )
    outcome = Outcome(ctx.name, title)
    outcome.figures = [
        info("ticks recorded", len(scheduled)),
        check(
            "takeover time (kill to a standby leading)",
            f"max {slowest:.2f} s ({each})",
            f"<= {LEASE_TTL:g} s (one beat_lease_ttl) + {TAKEOVER_TOLERANCE:g} s",
            slowest <= LEASE_TTL + TAKEOVER_TOLERANCE,
        ),
        info("largest gap between ticks", gap),
        check("ticks published twice", len(twice), "0", not twice),
        check("ticks skipped beyond the catch-up rule", len(skipped), "0", not skipped),
        check("beats stayed alive", not died, f"yes ({BEATS} not killed on purpose)", not died),
        figures.survival(workers),
    ]
    outcome.notes = [f"tick published twice: {tick}" for tick in twice[:5]]
    outcome.notes += [f"tick skipped: {tick}" for tick in skipped[:5]]
    outcome.notes += [f"beat exited by itself: {beat.describe()}" for beat in died]
    return outcome


async def start_out_of_step(ctx: Context, beats: Processes) -> None:
    """Start a beat a random part of a lease look later than the last one: beats started
    together would look at the lease in step, which hides how late a standby may look."""
    await anyio.sleep(ctx.rng.uniform(0, LEASE_TTL / 3))
    await beats.start()


async def wait_for_leader(beats: Processes) -> TaskqProcess:
    """The running beat whose latest word on the lease is that it leads."""
    found: list[TaskqProcess] = []

    async def one_leads() -> bool:
        found[:] = [beat for beat in beats.running if leads(beat)]
        return bool(found)

    if not await until(one_leads, timeout=WAIT, interval=0.02):
        raise TimeoutError(f"no beat led within {WAIT:g} s")
    return found[0]


def leads(beat: TaskqProcess) -> bool:
    output = beat.output()
    return output.rfind(LEADS) > output.rfind(STANDS_BY)


def led_at(beat: TaskqProcess) -> float:
    """When `beat` last said it leads: its log line's time stamp, "[2026-12-01 20:31:40,123"
    (the logging module's default, local time)."""
    line = next(line for line in reversed(beat.output().splitlines()) if LEADS in line)
    stamp = datetime.strptime(line[1:24], "%Y-%m-%d %H:%M:%S,%f")
    return stamp.timestamp()


async def wait_for_ticks(records: Records, more: int) -> None:
    seen = records.distinct("tick")

    async def ticked() -> bool:
        records.refresh()
        return records.distinct("tick") >= seen + more

    if not await until(ticked, timeout=WAIT + more * PERIOD, interval=0.05):
        raise TimeoutError(f"fewer than {more} ticks within {WAIT + more * PERIOD:g} s")


def skipped_beyond_catch_up(scheduled: list[float], takeovers: list[Takeover]) -> list[float]:
    """Ticks of the schedule missing for no reason. A tick due from the kill (less the fire
    that may have been under way) until the takeover may be missing, except the latest: the
    new leader fires that one, once, for the missed period. With no tick recorded for an
    outage that missed some, the latest missed one counts as skipped."""
    if not scheduled:
        return []
    present = {round(tick, 3) for tick in scheduled}
    steps = round((scheduled[-1] - scheduled[0]) / PERIOD)
    grid = [round(scheduled[0] + step * PERIOD, 3) for step in range(steps + 1)]

    def in_outage(tick: float, takeover: Takeover) -> bool:
        return takeover.killed_at - SLACK < tick <= takeover.led_at + SLACK

    skipped = [
        tick
        for tick in grid
        if tick not in present and not any(in_outage(tick, t) for t in takeovers)
    ]
    for takeover in takeovers:
        due = [tick for tick in grid if in_outage(tick, takeover)]
        if due and not any(tick in present for tick in due):
            skipped.append(due[-1])
    return sorted(skipped)
