"""Measurement from /proc: CPU time, peak and settled RSS of a process tree, CPU steal,
summaries.

Standard library only: this module runs in every library's virtualenv.
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024
RSS_SAMPLE_INTERVAL = 0.02
# Settled RSS: SETTLE_SAMPLES samples SETTLE_INTERVAL apart within SETTLE_TOLERANCE bytes.
SETTLE_INTERVAL = 0.1
SETTLE_SAMPLES = 10
SETTLE_TOLERANCE = 64 * 1024
SETTLE_TIMEOUT = 15.0
# Set by the suite for one profiled run: where py-spy writes, and the py-spy to use.
PROFILE_TO = "BENCH_PROFILE_TO"
PY_SPY = "BENCH_PY_SPY"
PROFILE_RATE = 250
# /proc/stat's "cpu" line: user nice system idle iowait irq softirq steal guest guest_nice.
STEAL_FIELD = 7


def descendants(pid: int) -> list[int]:
    """`pid` and every process below it (threads' children included)."""
    tree, pending = [], [pid]
    while pending:
        current = pending.pop()
        tree.append(current)
        for task in Path(f"/proc/{current}/task").glob("*"):
            try:
                pending += [int(child) for child in (task / "children").read_text().split()]
            except OSError:
                continue
    return tree


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU seconds consumed so far by `pids` (processes that are gone count 0)."""
    ticks = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / CLOCK_TICKS


def rss_bytes(pids: Sequence[int]) -> int:
    """Resident set size of `pids` added up."""
    total = 0
    for pid in pids:
        try:
            resident_pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
        except OSError:
            continue
        total += resident_pages * PAGE_KIB * 1024
    return total


@dataclass(frozen=True)
class Settled:
    """A process tree's RSS once it stopped changing, or the last sample at the deadline."""

    rss: int
    processes: int
    seconds: float


def settled_rss(tree: Callable[[], Sequence[int]], timeout: float = SETTLE_TIMEOUT) -> Settled:
    """Poll the RSS of the processes `tree()` names (read again each time: a supervisor may
    still be forking) until SETTLE_SAMPLES samples in a row agree, or `timeout` passes."""
    started = time.perf_counter()
    samples: deque[int] = deque(maxlen=SETTLE_SAMPLES)
    while True:
        pids = tree()
        samples.append(rss_bytes(pids))
        settled = len(samples) == SETTLE_SAMPLES and max(samples) - min(samples) <= SETTLE_TOLERANCE
        seconds = time.perf_counter() - started
        if settled or seconds >= timeout:
            return Settled(samples[-1], len(pids), seconds)
        time.sleep(SETTLE_INTERVAL)


def cpu_times() -> tuple[int, int]:
    """(steal, total) jiffies of all CPUs since boot, from /proc/stat."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return fields[STEAL_FIELD], sum(fields[: STEAL_FIELD + 1])


class PeakRSS:
    """Samples the RSS of a process tree in a thread; `peak` is the largest sum seen."""

    def __init__(self, pids: Sequence[int]) -> None:
        self.pids = list(pids)
        self.peak = rss_bytes(self.pids)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="rss-sampler", daemon=True)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._stop.wait(RSS_SAMPLE_INTERVAL):
            self.peak = max(self.peak, rss_bytes(self.pids))


@dataclass
class Window:
    """What one timed window measured: wall time, the tree's CPU, its peak RSS, CPU steal, and
    the CPU of the servers it was given (the benchmark's Redis)."""

    seconds: float = 0.0
    cpu_seconds: float = 0.0
    server_cpu_seconds: float = 0.0
    peak_rss: int = 0
    steal_percent: float = 0.0


@contextmanager
def measured(pids: Sequence[int], servers: Sequence[int] = ()) -> Iterator[Window]:
    """Measure a block: the `Window` is filled in when the block ends."""
    window = Window()
    steal_before, total_before = cpu_times()
    cpu_before, server_before = cpu_seconds(pids), cpu_seconds(servers)
    with PeakRSS(pids) as rss:
        started = time.perf_counter()
        yield window
        window.seconds = time.perf_counter() - started
    window.cpu_seconds = cpu_seconds(pids) - cpu_before
    window.server_cpu_seconds = cpu_seconds(servers) - server_before
    window.peak_rss = rss.peak
    steal_after, total_after = cpu_times()
    window.steal_percent = 100 * (steal_after - steal_before) / max(1, total_after - total_before)


def percentile(values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile (`fraction` in 0..1) of a non-empty sample."""
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(fraction * len(ordered)) - 1))
    return ordered[rank]


@dataclass(frozen=True)
class Spread:
    """The median of several runs and their range."""

    median: float
    low: float
    high: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        return cls(statistics.median(values), min(values), max(values))


@contextmanager
def sampled(pid: int) -> Iterator[None]:
    """Sample `pid`'s Python stacks with py-spy during the block, when the suite asked for it
    (PROFILE_TO): only the thread holding the GIL, so waits (which release it) are left out.
    py-spy writes its raw (collapsed stacks) output when interrupted."""
    target = os.environ.get(PROFILE_TO)
    if not target:
        yield
        return
    argv = [os.environ[PY_SPY], "record", "--pid", str(pid), "--format", "raw", "-o", target]
    argv += ["--rate", str(PROFILE_RATE), "--nonblocking", "--gil"]
    spy = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield
    finally:
        spy.send_signal(signal.SIGINT)
        spy.wait(60)
