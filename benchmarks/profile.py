"""Where a taskq worker spends its time per task: py-spy samples of one drain.

The drain runs like the measured ones (a separate run, not among the figures) with py-spy
(from the `tools` virtualenv) attached to the worker for the timed window only, sampling the
thread that holds the GIL: Python running, not waiting (C code that releases the GIL, such as
SQLite's, is not seen either). The summary
is the functions with the most samples on their own (self time), and each sample charged to
the innermost taskq (or task body) function on its stack, that is the function plus the
library code it called ("event loop" when neither is on the stack), as shares of all samples
and as µs per task.
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from benchmarks import servers, venvs
from benchmarks.adapters import TASKQ, taskq_broker_missing
from benchmarks.measure import PROFILE_RATE, PROFILE_TO, PY_SPY
from benchmarks.suite import Case, Options, Outcome, interpreter, run_once
from benchmarks.workloads import WORKLOADS

TOP = 8
PROFILE_TASKS = 20_000  # enough samples even from a fast worker
FRAME = re.compile(r"^(?P<function>.*) \((?P<path>[^()]*?)(?::\d+)?\)$")


@dataclass(frozen=True)
class Profile:
    broker: str
    tasks: int
    samples: int
    self_time: list[tuple[str, int]]
    by_taskq_function: list[tuple[str, int]]

    def lines(self) -> list[str]:
        """Markdown: what the samples say, per task."""
        per_task = 1e6 / PROFILE_RATE / self.tasks

        def share(items: list[tuple[str, int]]) -> str:
            return "; ".join(
                f"`{name}` {100 * count / self.samples:.0f}% ({count * per_task:,.0f} µs)"
                for name, count in items
            )

        total = self.samples * per_task
        return [
            f"py-spy, {self.samples:,} samples at {PROFILE_RATE}/s of the thread holding the GIL"
            f" over a drain of {self.tasks:,} no-op tasks on {self.broker} (≈ {total:,.0f} µs of"
            " Python per task):",
            "",
            f"- on their own (self): {share(self.self_time)}",
            f"- by innermost taskq function: {share(self.by_taskq_function)}",
        ]


def _frame_name(frame: str) -> str:
    match = FRAME.match(frame)
    if match is None:
        return frame
    path = match["path"].split("site-packages/")[-1].removeprefix(f"{servers.ROOT}/")
    short = re.sub(r"^.*/lib/python3\.\d+/", "", path)
    return f"{match['function']} ({short})"


def _stacks(raw: str) -> Iterable[tuple[list[str], int]]:
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            yield [_frame_name(frame) for frame in stack.split(";")], int(count)


def _owner(frames: list[str]) -> str:
    """The innermost frame of taskq (its CLI aside) or of the benchmark's task bodies."""
    for frame in reversed(frames):
        if "(benchmarks/" in frame or ("(taskq/" in frame and "(taskq/cli.py)" not in frame):
            return frame
    return "event loop"


def summarize(raw: str, broker: str, tasks: int) -> Profile:
    self_time: Counter[str] = Counter()
    by_function: Counter[str] = Counter()
    for frames, count in _stacks(raw):
        self_time[frames[-1]] += count
        by_function[_owner(frames)] += count
    return Profile(
        broker,
        tasks,
        sum(self_time.values()),
        self_time.most_common(TOP),
        by_function.most_common(TOP),
    )


def _case(options: Options) -> Case:
    """A taskq drain on Redis, or on SQLite while taskq's Redis broker is missing (or
    --only/--skip leave it out)."""
    drains = [Case(WORKLOADS["drain"], TASKQ, broker) for broker in ("redis", "sqlite")]
    usable = [c for c in drains if not taskq_broker_missing(c.broker) and options.selected(c)]
    return usable[0] if usable else drains[-1]


def run(options: Options, logs: Path, srv: servers.Servers) -> Profile | None:
    """Profile one taskq drain (see `_case`); None when the run failed."""
    case = _case(options)
    tasks = options.n(case.workload)
    outcome = Outcome(case, tasks if options.quick else max(tasks, PROFILE_TASKS))
    target = logs / "profile.txt"
    py_spy = venvs.ensure("tools").parent / "py-spy"
    extra = {PROFILE_TO: str(target), PY_SPY: str(py_spy)}
    run_once(outcome, srv, logs, interpreter(TASKQ, options), extra)
    if not target.is_file():
        print(f"[bench] profile failed: {outcome.skipped}", file=sys.stderr)
        return None
    return summarize(target.read_text(), case.broker, outcome.n)
