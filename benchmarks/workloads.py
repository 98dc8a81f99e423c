"""The workloads, written once against the `Adapter` interface. Standard library only.

Each returns its figures for one run: a dict from figure name (see `report.FIGURES`) to a
number.
Worker-side figures come from a timed window on a warmed-up worker: it has already run one
task (so it is connected and its code is loaded), it is paused while the backlog is published,
and the window runs from resuming it until the last task has counted itself; the window also
measures the benchmark's redis-server (`redis_cpu_us_per_task`: the broker and results on
Redis, the results on RabbitMQ, the completion counter on every broker). `idle` measures the
same warmed-up worker left alone.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from benchmarks import measure, probe
from benchmarks.adapters.base import Adapter, NotAvailable, WorkerHandle, WorkerSpec, redis_pid
from benchmarks.tasks import SLEEP_SECONDS, Kind

START_TIMEOUT = 120.0  # a worker's start-up, RabbitMQ's connection set-up included
MIN_RATE = 20.0  # tasks/s below which a run counts as stuck
MIXED_CONCURRENCY = 100
ROUND_TRIP_WARMUP = 10
IN_FLIGHT = 100  # enqueue_concurrent's publishes awaited together
SHORT_CHAIN = 10  # links of each chain of `short_chains`
DRAIN_WORKER = WorkerSpec(Kind.NOOP)  # drain's worker, which idle measures too

Figures = dict[str, float]
MIXED_TITLE = (
    f"mixed: sleep {SLEEP_SECONDS * 1e3:g} ms, concurrency {MIXED_CONCURRENCY}"
    f" (ideal {MIXED_CONCURRENCY / SLEEP_SECONDS:,.0f}/s)"
)


@dataclass(frozen=True)
class Workload:
    name: str
    title: str
    default_n: int
    quick_n: int
    run: Callable[[Adapter, int, Path], Awaitable[Figures]]

    async def run_on(self, adapter: Adapter, n: int, log: Path) -> Figures:
        """One run on an opened adapter; NotAvailable when the library cannot do it."""
        if reason := adapter.unsupported(self.name):
            raise NotAvailable(reason)
        return await self.run(adapter, n, log)


def _deadline(tasks: int) -> float:
    return START_TIMEOUT + tasks / MIN_RATE


@asynccontextmanager
async def warmed_worker(
    adapter: Adapter, spec: WorkerSpec, log: Path
) -> AsyncIterator[WorkerHandle]:
    """A worker that has run one task of `spec.kind`; the probe counts 1 on entry."""
    await probe.reset()
    worker = await adapter.start_worker(spec, log)
    try:
        await adapter.publish(spec.kind)
        await probe.wait_for(1, START_TIMEOUT, worker.alive)
        yield worker
    finally:
        await worker.stop()


def _worker_figures(window: measure.Window, tasks: int) -> Figures:
    return {
        "tasks_per_s": tasks / window.seconds,
        "cpu_us_per_task": 1e6 * window.cpu_seconds / tasks,
        "redis_cpu_us_per_task": 1e6 * window.server_cpu_seconds / tasks,
        "peak_rss_mb": window.peak_rss / 2**20,
        "steal_pct": window.steal_percent,
    }


async def _drain(adapter: Adapter, spec: WorkerSpec, n: int, log: Path) -> Figures:
    async with warmed_worker(adapter, spec, log) as worker:
        await worker.pause()
        await adapter.publish_batch(spec.kind, n)
        pids = worker.pids()
        with measure.sampled(pids[0]), measure.measured(pids, [redis_pid()]) as window:
            await worker.resume()
            await probe.wait_for(1 + n, _deadline(n), worker.alive)
    return _worker_figures(window, n)


async def drain(adapter: Adapter, n: int, log: Path) -> Figures:
    return await _drain(adapter, DRAIN_WORKER, n, log)


async def idle(adapter: Adapter, n: int, log: Path) -> Figures:
    """The RSS of the drain worker's whole process tree once it has run `n` no-op tasks (so it
    is connected and consuming) and, left alone, stopped changing."""
    async with warmed_worker(adapter, DRAIN_WORKER, log) as worker:
        if n > 1:
            await adapter.publish_batch(Kind.NOOP, n - 1)
            await probe.wait_for(n, _deadline(n), worker.alive)
        idle_tree = await asyncio.to_thread(measure.settled_rss, worker.pids)
    # settle_s is kept in run.json and the progress line, not the tables: at the deadline
    # (measure.SETTLE_TIMEOUT) it says the RSS never settled.
    return {
        "idle_rss_mb": idle_tree.rss / 2**20,
        "processes": idle_tree.processes,
        "settle_s": idle_tree.seconds,
    }


async def drain_processes(adapter: Adapter, n: int, log: Path) -> Figures:
    """`drain` with two worker processes (taskq `--processes 2`, Celery prefork -c 2)."""
    return await _drain(adapter, WorkerSpec(Kind.NOOP, processes=2), n, log)


async def cpu_threads(adapter: Adapter, n: int, log: Path) -> Figures:
    """CPU-bound plain functions (about 20 ms of hashing) in the worker's threads."""
    return await _drain(adapter, WorkerSpec(Kind.HASH), n, log)


async def cpu_processes(adapter: Adapter, n: int, log: Path) -> Figures:
    """The same in a process pool of one process per core (taskq `--pool process`, Celery
    prefork)."""
    return await _drain(adapter, WorkerSpec(Kind.HASH, pool="process"), n, log)


async def mixed(adapter: Adapter, n: int, log: Path) -> Figures:
    """Throughput approaches MIXED_CONCURRENCY / SLEEP_SECONDS when overhead is small."""
    return await _drain(adapter, WorkerSpec(Kind.SLEEP, concurrency=MIXED_CONCURRENCY), n, log)


async def sync(adapter: Adapter, n: int, log: Path) -> Figures:
    return await _drain(adapter, WorkerSpec(Kind.SYNC, threads=10), n, log)


async def _publish_timed(n: int, publish: Callable[[], Awaitable[None]]) -> Figures:
    started, cpu = time.perf_counter(), time.process_time()
    await publish()
    seconds = time.perf_counter() - started
    return {"tasks_per_s": n / seconds, "cpu_us_per_task": 1e6 * (time.process_time() - cpu) / n}


async def enqueue(adapter: Adapter, n: int, log: Path) -> Figures:
    """One producer, one task at a time, each publish awaited; no worker running."""

    async def one_by_one() -> None:
        for _ in range(n):
            await adapter.publish(Kind.NOOP)

    try:
        return await _publish_timed(n, one_by_one)
    finally:
        await adapter.purge()


async def enqueue_sync(adapter: Adapter, n: int, log: Path) -> Figures:
    """`enqueue` from synchronous code (a Django view, a script): one thread publishing through
    the library's blocking API, one call at a time. Its first call (taskq: starting the loop
    thread and connecting it) is not timed, as `open()` connects the awaited producer."""

    def one_by_one() -> None:
        for _ in range(n):
            adapter.publish_sync(Kind.NOOP)

    try:
        await asyncio.to_thread(adapter.publish_sync, Kind.NOOP)
        return await _publish_timed(n, lambda: asyncio.to_thread(one_by_one))
    finally:
        await adapter.purge()


async def enqueue_concurrent(adapter: Adapter, n: int, log: Path) -> Figures:
    """One producer, IN_FLIGHT single publishes at a time through `asyncio.gather` (what a busy
    web app does); a library whose publish blocks runs them one after another."""

    async def in_flight() -> None:
        for start in range(0, n, IN_FLIGHT):
            await asyncio.gather(
                *(adapter.publish(Kind.NOOP) for _ in range(min(IN_FLIGHT, n - start)))
            )

    try:
        return await _publish_timed(n, in_flight)
    finally:
        await adapter.purge()


async def enqueue_bulk(adapter: Adapter, n: int, log: Path) -> Figures:
    """One producer through the library's bulk API (see each adapter's `batch_method`)."""
    try:
        return await _publish_timed(n, lambda: adapter.publish_batch(Kind.NOOP, n))
    finally:
        await adapter.purge()


async def round_trip(adapter: Adapter, n: int, log: Path) -> Figures:
    """`n` sequential publish + wait-for-result calls against an idle worker."""
    latencies = []
    async with warmed_worker(adapter, WorkerSpec(Kind.NOOP), log):
        for _ in range(ROUND_TRIP_WARMUP):
            await adapter.round_trip()
        for _ in range(n):
            started = time.perf_counter()
            await adapter.round_trip()
            latencies.append(time.perf_counter() - started)
    return {
        "p50_ms": 1e3 * measure.percentile(latencies, 0.50),
        "p99_ms": 1e3 * measure.percentile(latencies, 0.99),
    }


async def _canvas(
    adapter: Adapter,
    tasks: int,
    log: Path,
    submit: Callable[[], Awaitable[None]],
    workflows: int = 1,
) -> Figures:
    """Time from submitting a workflow of `tasks` tasks until the last has run; with
    `workflows`, that many of `tasks // workflows` tasks, one after another."""
    async with warmed_worker(adapter, WorkerSpec(Kind.NOOP), log) as worker:
        with measure.measured(worker.pids(), [redis_pid()]) as window:
            for done in range(1, workflows + 1):
                await submit()
                await probe.wait_for(1 + done * tasks // workflows, _deadline(tasks), worker.alive)
    figures = _worker_figures(window, tasks)
    figures["seconds"] = window.seconds
    return figures


async def chord(adapter: Adapter, n: int, log: Path) -> Figures:
    return await _canvas(adapter, n + 1, log, lambda: adapter.chord(n))


async def chain(adapter: Adapter, n: int, log: Path) -> Figures:
    async def submit() -> None:
        try:
            await adapter.chain(n)
        except RecursionError as exc:  # a chain built or encoded by recursing link by link
            limit = f"exceeds Python's recursion limit in {adapter.library}"
            raise NotAvailable(f"a {n:,}-link chain {limit}") from exc

    return await _canvas(adapter, n, log, submit)


async def short_chains(adapter: Adapter, n: int, log: Path) -> Figures:
    """N links as chains of SHORT_CHAIN links, each published when the one before ended:
    beside `chain`, what a link costs in a short chain and in a long one (CPU per task)."""
    chains = max(1, n // SHORT_CHAIN)
    return await _canvas(
        adapter, chains * SHORT_CHAIN, log, lambda: adapter.chain(SHORT_CHAIN), chains
    )


WORKLOADS = {
    w.name: w
    for w in [
        Workload("enqueue", "enqueue, one at a time", 10_000, 500, enqueue),
        Workload(
            "enqueue_sync", "enqueue from sync code, one at a time", 10_000, 500, enqueue_sync
        ),
        Workload(
            "enqueue_concurrent",
            f"enqueue, {IN_FLIGHT} calls in flight",
            10_000,
            500,
            enqueue_concurrent,
        ),
        Workload("enqueue_bulk", "enqueue, bulk", 10_000, 500, enqueue_bulk),
        Workload("drain", "drain no-op tasks", 5_000, 500, drain),
        Workload(
            "drain_processes", "drain no-op tasks, 2 worker processes", 5_000, 500, drain_processes
        ),
        Workload("idle", "worker at idle", 1, 1, idle),
        Workload("round_trip", "round trip, delay + get", 1_000, 100, round_trip),
        Workload("mixed", MIXED_TITLE, 10_000, 1_000, mixed),
        Workload("sync", "sync tasks in threads", 5_000, 500, sync),
        Workload("cpu_threads", "CPU-bound tasks (20 ms) in threads", 200, 20, cpu_threads),
        Workload(
            "cpu_processes", "CPU-bound tasks (20 ms) in a process pool", 200, 20, cpu_processes
        ),
        Workload("chord", "chord", 10_000, 200, chord),
        Workload("chain", "chain", 1_000, 50, chain),
        Workload("short_chains", f"chains of {SHORT_CHAIN}", 1_000, 50, short_chains),
    ]
}
