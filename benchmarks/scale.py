"""`python -m benchmarks.scale [--n N] [--runs R] [--processes P ...]`: docs/scaling.md's
arithmetic checked at the scale of this machine.

The no-op drain of `benchmarks.workloads`, taskq alone, on three layouts: one Redis; a
three-master Redis Cluster (tests/servers.py's) holding queues and results; the cluster for
the queues with the results on the one Redis. The same six queues on each, chosen so that every
master of the cluster serves two of them, drained by one `taskq worker` with 1, 2, ...
processes consuming all the queues. The queues are filled first; the figures come from the
middle 90 % of the drain (from the 5th to the 95th percent of completions, seen on the
completion counter, which lives on a Redis of its own so that it weighs on no master):
tasks/s, the worker tree's CPU per task, and the CPU per task of the layout's redis-servers,
summed and of each (the masters first, then the results' Redis).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import taskq
from benchmarks import measure, probe
from benchmarks.adapters.base import BROKER_URL, console_script
from benchmarks.servers import load_test_servers
from benchmarks.tasks import Kind

QUEUES_PER_MASTER = 2
WINDOW = (0.05, 0.95)  # of the completions: the drain without its start and its tail
PUBLISH_CHUNK = 1_000
DRAIN_TIMEOUT = 300.0
CONCURRENCY = 100


@dataclass
class Layout:
    """The Redis servers a run uses: `url` for taskq, `pids` whose CPU is measured, and
    `ports`, to flush them."""

    name: str
    url: str
    ports: list[int]
    pids: list[int]
    environment: dict[str, str] = field(default_factory=dict)  # the worker's, on top


@dataclass
class Figures:
    layout: str
    processes: int
    queues: int
    tasks_per_s: float
    worker_cpu_us: float
    redis_cpu_us: float
    each_redis_cpu_us: list[float]  # in the order of the layout's servers
    steal_percent: float


def _master_port_of(port: int, queue: str) -> int:
    """The port of the master whose slots hold `queue`'s keys (its hash tag)."""
    servers = load_test_servers()
    slot = int(servers.redis_command(port, "CLUSTER", "KEYSLOT", f"{{{queue}}}").lstrip(b":"))
    for line in servers.redis_command(port, "CLUSTER", "NODES").decode().splitlines():
        _id, address, flags, *_rest, ranges = line.split(maxsplit=8)
        if "master" not in flags:
            continue
        for part in ranges.split():
            low, _, high = part.partition("-")
            if low.isdigit() and int(low) <= slot <= int(high or low):
                return int(address.split("@")[0].rsplit(":", 1)[1])
    raise RuntimeError(f"no master serves slot {slot}")


def spread_queues(cluster: Layout) -> list[str]:
    """QUEUES_PER_MASTER queue names per master of `cluster` (the first of q0, q1, ...)."""
    chosen: list[str] = []
    taken = dict.fromkeys(cluster.ports, 0)
    index = 0
    while len(chosen) < QUEUES_PER_MASTER * len(cluster.ports):
        name = f"q{index}"
        index += 1
        port = _master_port_of(cluster.ports[0], name)
        if taken[port] < QUEUES_PER_MASTER:
            taken[port] += 1
            chosen.append(name)
    return chosen


@contextmanager
def layouts(directory: Path) -> Iterator[tuple[list[Layout], str]]:
    """One Redis, a three-master cluster (second), the cluster as the broker with the results on
    the one Redis, and the completion counter's Redis (its URL)."""
    servers = load_test_servers()
    single = servers.RedisServer(directory / "single")
    cluster = servers.RedisCluster(directory / "cluster")
    counter = servers.RedisServer(directory / "counter")
    try:
        for server in (single, cluster, counter):
            server.start()
        hosts = ",".join(f"{host}:{port}" for host, port in cluster.startup_nodes)
        cluster_url = f"redis://{hosts}/0?cluster=true"
        masters = [node.port for node in cluster.nodes], [node.pid for node in cluster.nodes]
        yield (
            [
                Layout("one Redis", single.url, [single.port], [single.pid]),
                Layout("Redis Cluster, 3 masters", cluster_url, *masters),
                Layout(
                    "Redis Cluster, 3 masters; results on one Redis",
                    cluster_url,
                    [*masters[0], single.port],
                    [*masters[1], single.pid],
                    {"TASKQ_RESULT_BACKEND": single.url},
                ),
            ],
            counter.url,
        )
    finally:
        for server in (single, cluster, counter):
            server.stop()


async def fill(layout: Layout, queues: list[str], n: int) -> None:
    """`n` no-op tasks, round-robin over `queues`, published in batches."""
    app = taskq.TaskQ("bench-scale", broker=layout.url)
    try:
        for start in range(0, n, PUBLISH_CHUNK):
            messages = [
                app.build_message(Kind.NOOP.value, queue=queues[i % len(queues)])
                for i in range(start, min(n, start + PUBLISH_CHUNK))
            ]
            await app.publish_messages(messages)
    finally:
        await app.close()


def _completed(counter_port: int) -> int:
    reply = load_test_servers().redis_command(counter_port, "INCRBY", probe.COUNTER_KEY, "0")
    return int(reply.lstrip(b":"))


def _wait_for(
    counter_port: int, count: int, worker: subprocess.Popen[bytes], deadline: float
) -> None:
    while _completed(counter_port) < count:
        if worker.poll() is not None:
            raise RuntimeError(f"the worker exited with {worker.returncode}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{count} tasks not done within {DRAIN_TIMEOUT:g} s")
        time.sleep(probe.POLL_INTERVAL)


def drain(
    layout: Layout, queues: list[str], counter_url: str, processes: int, n: int, log: Path
) -> Figures:
    servers = load_test_servers()
    for port in layout.ports:
        servers.redis_command(port, "FLUSHALL")
    counter_port = int(counter_url.rsplit(":", 1)[1].split("/")[0])
    servers.redis_command(counter_port, "SET", probe.COUNTER_KEY, "0")
    asyncio.run(fill(layout, queues, n))
    environment = {
        **os.environ,
        **layout.environment,
        BROKER_URL: layout.url,
        probe.URL_VARIABLE: counter_url,
    }
    argv = [
        console_script("taskq"),
        "worker",
        "-A",
        "benchmarks.adapters.taskq_adapter:app",
        "-Q",
        ",".join(queues),
        "-c",
        str(CONCURRENCY),
        "--processes",
        str(processes),
        "--loop",
        "asyncio",
        "--loglevel",
        "warning",
    ]
    with log.open("ab") as output:
        worker = subprocess.Popen(argv, env=environment, stdout=output, stderr=output)
    try:
        deadline = time.monotonic() + DRAIN_TIMEOUT
        first, last = (round(fraction * n) for fraction in WINDOW)
        _wait_for(counter_port, first, worker, deadline)
        tree = measure.descendants(worker.pid)
        started_at, done_at_start = time.perf_counter(), _completed(counter_port)
        steal_before, total_before = measure.cpu_times()
        worker_before = measure.cpu_seconds(tree)
        redis_before = [measure.cpu_seconds([pid]) for pid in layout.pids]
        _wait_for(counter_port, last, worker, deadline)
        seconds, done = time.perf_counter() - started_at, _completed(counter_port) - done_at_start
        worker_cpu = measure.cpu_seconds(tree) - worker_before
        redis_cpu = [
            measure.cpu_seconds([pid]) - before
            for pid, before in zip(layout.pids, redis_before, strict=True)
        ]
        steal_after, total_after = measure.cpu_times()
        _wait_for(counter_port, n, worker, deadline)
    finally:
        worker.terminate()
        worker.wait(timeout=60)
    return Figures(
        layout=layout.name,
        processes=processes,
        queues=len(queues),
        tasks_per_s=done / seconds,
        worker_cpu_us=1e6 * worker_cpu / done,
        redis_cpu_us=1e6 * sum(redis_cpu) / done,
        each_redis_cpu_us=[1e6 * cpu / done for cpu in redis_cpu],
        steal_percent=100 * (steal_after - steal_before) / max(1, total_after - total_before),
    )


def median_row(runs: list[Figures]) -> list[Any]:
    def spread(values: list[float], digits: int) -> str:
        middle = statistics.median(values)
        return f"{middle:,.{digits}f} ({min(values):,.{digits}f}-{max(values):,.{digits}f})"

    first = runs[0]
    return [
        first.layout,
        first.processes,
        first.queues,
        spread([run.tasks_per_s for run in runs], 0),
        spread([run.worker_cpu_us for run in runs], 0),
        spread([run.redis_cpu_us for run in runs], 1),
        " / ".join(
            f"{statistics.median(each):.1f}"
            for each in zip(*(run.each_redis_cpu_us for run in runs), strict=True)
        ),
        spread([run.steal_percent for run in runs], 1),
    ]


HEADER = [
    "layout",
    "worker processes",
    "queues",
    "tasks/s",
    "worker CPU µs/task",
    "Redis CPU µs/task (all servers)",
    "each server's µs/task (medians)",
    "steal %",
]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scale")
    parser.add_argument("--n", type=int, default=40_000, help="tasks per drain")
    parser.add_argument("--runs", type=int, default=3, help="drains per row (median and range)")
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    if args.n < 100 or args.runs < 1 or min(args.processes) < 1:
        parser.error("--n must be at least 100, --runs and --processes at least 1")
    rows = []
    with tempfile.TemporaryDirectory(prefix="taskq-scale-") as scratch:
        log = Path(scratch) / "worker.log"
        with layouts(Path(scratch)) as (found, counter_url):
            queues = spread_queues(found[1])  # the cluster's: the same queues on every layout
            for layout in found:
                for processes in args.processes:
                    runs = []
                    for round_number in range(args.runs):
                        figures = drain(layout, queues, counter_url, processes, args.n, log)
                        print(
                            f"[scale] {layout.name}, {processes} process(es), run "
                            f"{round_number + 1}: {figures}",
                            file=sys.stderr,
                        )
                        runs.append(figures)
                    rows.append(median_row(runs))
    print("| " + " | ".join(HEADER) + " |")
    print("|" + "---|" * len(HEADER))
    for row in rows:
        print("| " + " | ".join(str(cell) for cell in row) + " |")


if __name__ == "__main__":
    main()
