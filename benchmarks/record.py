"""One benchmark invocation as data (saved as run.json next to its logs) and RESULTS.md.

`python -m benchmarks --render run.json` writes the report again from a saved record, so a
change to the tables does not need another hour of measuring.
"""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import subprocess
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks import report
from benchmarks.servers import CEILING_CLIENTS, PINGS, ROOT
from benchmarks.suite import Outcome

METHOD = """\
## How it is measured

- Every library runs in its own virtualenv under `benchmarks/.peers/` (pinned in
  `benchmarks/requirements/`), taskq's too (this checkout with its redis and amqp extras, not
  the development install); all are made from the same CPython.
  Each worker is the library's own CLI, one process (Celery `--pool solo` for no-op tasks,
  `threads` where tasks block), started by the timer, on the same throwaway Redis (and
  RabbitMQ) started for the run and flushed before each run. No library logs a line per task.
  Every worker runs on asyncio's own event loop (taskq with `--loop asyncio`: its `auto`
  would take uvloop where it is installed).
- Every task ends with one Redis `INCR` (the same few lines of RESP in every library); the
  timer polls the counter to see when a workload is done. Every library stores results.
- Worker figures (drain, mixed, sync, canvas) come from a warmed-up worker (it has run one
  task) paused with SIGSTOP while the backlog is published: the window runs from SIGCONT to
  the last task. CPU is user + system time of the worker's process tree from `/proc` over the
  window, divided by the tasks; peak RSS is sampled every 20 ms; steal is the share of all
  CPUs' time stolen by the hypervisor over the window (`/proc/stat`). On a shared machine
  throughput moves with steal; CPU per task is the steadier figure.
- enqueue: one producer in the timer's process, no worker; CPU is the producer's. Bulk: each
  library's bulk API in calls of 1,000, or 1,000 concurrent single calls where it has none.
- round trip: sequential publish + wait-for-result against an idle worker; p50 and p99.
- idle: the drain worker, once it has run one task (connected and consuming), left alone;
  the RSS of its whole process tree is polled every 0.1 s until ten samples in a row agree
  within 64 KiB (15 s at most). "processes" says how many it adds up: the worker command and
  every process below it. That is one process for taskq, Celery (`--pool solo`, no forks),
  arq, SAQ and streaq, and two for taskiq and Dramatiq (a supervisor and its one worker).
- taskq x: taskq's median over the peer's on the same broker in the same invocation
  (throughput), or the peer's over taskq's (latency, CPU per task, RSS). Above 1, taskq is
  ahead.
- Each adapter's docstring (`benchmarks/adapters/`) says how that library is set up and why.
"""


@dataclass
class Record:
    command: str
    runs: int
    machine: dict[str, str]
    outcomes: list[Outcome]
    ceiling: dict[str, float] = field(default_factory=dict)
    ping_ms: dict[str, float] = field(default_factory=dict)  # one redis-py PING: p10, p50
    profile: list[str] = field(default_factory=list)

    def save(self, path: Path) -> None:
        data: dict[str, Any] = {**self.__dict__, "outcomes": [o.as_json() for o in self.outcomes]}
        path.write_text(json.dumps(data, indent=1))

    @classmethod
    def load(cls, path: Path) -> Record:
        data = json.loads(path.read_text())
        data["outcomes"] = [Outcome.from_json(item) for item in data["outcomes"]]
        return cls(**data)


def machine() -> dict[str, str]:
    cpu_model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "unknown",
    )
    mem_kib = int(Path("/proc/meminfo").read_text().split("\n", 1)[0].split()[1])
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": str(os.cpu_count()),
        "cpu": cpu_model,
        "memory": f"{mem_kib / 2**20:.1f} GiB",
        "kernel": platform.release(),
        "python": platform.python_version(),
        "taskq commit": _git_commit(),
    }


def _git_commit() -> str:
    """The commit of the taskq being measured (the checkout its package is imported from)."""
    spec = importlib.util.find_spec("taskq")
    checkout = Path(spec.origin).parent.parent if spec and spec.origin else ROOT

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=checkout, capture_output=True, text=True, check=False
        ).stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    return commit + (" (with uncommitted changes)" if git("status", "--porcelain") else "")


def _versions(outcomes: list[Outcome]) -> str:
    found: dict[str, dict[str, str]] = {}
    for outcome in outcomes:
        found.setdefault(outcome.case.library.name, {}).update(outcome.versions)
    rows = [
        [library, ", ".join(f"{name} {version}" for name, version in packages.items())]
        for library, packages in found.items()
    ]
    return report.markdown(["library", "installed versions"], rows)


def _ceiling(ceiling: dict[str, float], ping_ms: dict[str, float]) -> str:
    rows = [[f"`{name}`", f"{rate:,.0f}"] for name, rate in ceiling.items()]
    table = report.markdown(
        [f"redis-benchmark -t lpush,rpop -c {CEILING_CLIENTS}", "requests/s"], rows
    )
    return f"{table}\n\n{ping_line(ping_ms)}" if ping_ms else table


def ping_line(ping_ms: dict[str, float]) -> str:
    figures = ", ".join(f"{name} {ms:.3f} ms" for name, ms in ping_ms.items())
    return f"One redis-py PING at a time (asyncio, {PINGS:,} of them): {figures}."


def _bulk_methods(outcomes: list[Outcome]) -> str:
    methods = {o.case.library.name: o.bulk_method for o in outcomes if o.bulk_method}
    return "\n".join(f"- {library}: {method}" for library, method in methods.items())


def summary(record: Record) -> str:
    """The two tables the README quotes."""
    outcomes = record.outcomes
    return "\n\n".join(
        [
            "Throughput (tasks/s, higher is better), latency (p50 ms, lower is better) or "
            "worker RSS at idle (MB, lower is better), median of the runs; in brackets, how "
            "many times better taskq is (taskq x):",
            report.pivot(outcomes),
            "Worker CPU per task (µs, user + system; the producer's for enqueue), and taskq x:",
            report.pivot(outcomes, report.CPU),
        ]
    )


def document(record: Record) -> str:
    """RESULTS.md."""
    missing = report.not_available(record.outcomes)
    machine_lines = "\n".join(f"- {name}: {value}" for name, value in record.machine.items())
    parts = [
        "# Benchmark results",
        f"`{record.command}`, {record.runs} run(s) per figure: medians, with (min-max) in the "
        "full table.",
        "## Machine\n\n" + machine_lines,
        "## Versions\n\n" + _versions(record.outcomes),
        "## Summary\n\n" + summary(record),
        "## All figures\n\n" + report.full_table(record.outcomes),
        "## Not available\n\n" + ("\n".join(f"- {line}" for line in missing) or "- none"),
        "## How each library publishes in bulk\n\n" + _bulk_methods(record.outcomes),
        "## Redis's own ceiling\n\n" + _ceiling(record.ceiling, record.ping_ms),
        "## Where a taskq worker spends its time\n\n"
        + ("\n".join(record.profile) or "(not profiled in this run)"),
        METHOD,
    ]
    return "\n\n".join(parts) + "\n"
