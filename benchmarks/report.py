"""Tables: every figure as the median of the runs with their range, and taskq's ratio to
each peer on the same broker in the same invocation."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from benchmarks.adapters import LIBRARIES
from benchmarks.measure import Spread
from benchmarks.suite import Outcome


@dataclass(frozen=True)
class Figure:
    key: str
    header: str
    fmt: str
    higher_is_better: bool | None  # None: context, no ratio
    alone: str = "{}"  # how the summary shows it, without its column header


FIGURES = [
    Figure("tasks_per_s", "tasks/s", ",.0f", True, "{} tasks/s"),
    Figure("p50_ms", "p50 ms", ",.2f", False, "p50 {} ms"),
    Figure("p99_ms", "p99 ms", ",.2f", False),
    Figure("seconds", "wall s", ",.2f", False),
    Figure("cpu_us_per_task", "CPU µs/task", ",.0f", False),
    Figure("redis_cpu_us_per_task", "Redis CPU µs/task", ",.0f", False),
    Figure("peak_rss_mb", "peak RSS MB", ",.0f", False),
    Figure("idle_rss_mb", "idle RSS MB", ",.1f", False, "idle RSS {} MB"),
    Figure("processes", "processes", ",.0f", None),  # how many the idle RSS adds up
    Figure("steal_pct", "steal %", ",.1f", None),
]
BY_KEY = {figure.key: figure for figure in FIGURES}
HEADLINES = ("tasks_per_s", "p50_ms", "idle_rss_mb")  # each workload's main figure
CPU = "cpu_us_per_task"


def spreads(outcome: Outcome) -> dict[str, Spread]:
    if outcome.skipped or not outcome.runs:
        return {}
    return {key: Spread.of([run[key] for run in outcome.runs]) for key in outcome.runs[0]}


def _taskq_twin(outcome: Outcome, outcomes: Sequence[Outcome]) -> Outcome | None:
    case = outcome.case
    for other in outcomes:
        twin = other.case
        if (twin.library.name, twin.workload, twin.broker) == ("taskq", case.workload, case.broker):
            return other
    return None


def ratio(outcome: Outcome, outcomes: Sequence[Outcome], key: str) -> str:
    """How many times better taskq is at `key` (> 1: taskq wins); blank on taskq's own rows."""
    if outcome.case.library.name == "taskq":
        return ""
    twin = _taskq_twin(outcome, outcomes)
    ours, theirs = spreads(twin) if twin else {}, spreads(outcome)
    if key not in ours or key not in theirs or not ours[key].median or not theirs[key].median:
        return "n/a"
    better = BY_KEY[key].higher_is_better
    value = ours[key].median / theirs[key].median
    return f"{value if better else 1 / value:.2f}x"


def _cell(spread: Spread | None, figure: Figure, with_range: bool) -> str:
    if spread is None:
        return ""
    median = format(spread.median, figure.fmt)
    if not with_range:
        return median
    return f"{median} ({format(spread.low, figure.fmt)}-{format(spread.high, figure.fmt)})"


def _title(outcome: Outcome) -> str:
    workload = outcome.case.workload
    if workload.name in ("chord", "chain"):
        return f"{workload.title} of {outcome.n:,}"
    return workload.title


def _library(outcome: Outcome) -> str:
    return outcome.case.library.name


def markdown(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _headline(values: dict[str, Spread]) -> str:
    return next((key for key in HEADLINES if key in values), HEADLINES[0])


def full_table(outcomes: Sequence[Outcome]) -> str:
    """Every figure: median (min-max) of the runs; taskq's ratio on the row's headline figure
    (speed, latency or idle RSS) and on CPU."""
    shown = [f for f in FIGURES if any(f.key in spreads(o) for o in outcomes)]
    header = ["workload", "broker", "library", *(f.header for f in shown)]
    header += ["taskq x", "taskq x CPU"]
    rows = []
    for outcome in outcomes:
        values = spreads(outcome)
        row = [_title(outcome), outcome.case.broker, _library(outcome)]
        if outcome.skipped:
            row += [outcome.skipped, *[""] * (len(shown) - 1), "", ""]
        else:
            ranged = len(outcome.runs) > 1
            row += [_cell(values.get(f.key), f, ranged) for f in shown]
            cpu = ratio(outcome, outcomes, CPU) if CPU in values else ""  # idle: no CPU figure
            row += [ratio(outcome, outcomes, _headline(values)), cpu]
        rows.append(row)
    return markdown(header, rows)


def _pivot_cell(outcome: Outcome, outcomes: Sequence[Outcome], key: str) -> str:
    if outcome.skipped:
        return "failed" if outcome.skipped.startswith("failed") else "-"
    value = _cell(spreads(outcome).get(key), BY_KEY[key], False)
    shown = ratio(outcome, outcomes, key)
    return f"{value} ({shown})" if shown not in ("", "n/a") else value


def pivot(outcomes: Sequence[Outcome], key: str | None = None) -> str:
    """One row per workload and broker, one column per library (taskq first): the median of
    `key`, or of each row's headline figure when None, and on a peer taskq's ratio to it in
    brackets. "-": the library cannot do it."""
    present = {_library(outcome) for outcome in outcomes}
    libraries = [name for name in LIBRARIES if name in present]
    rows: dict[tuple[str, str], dict[str, str]] = {}
    units: dict[tuple[str, str], str] = {}
    for outcome in outcomes:
        row, values = (_title(outcome), outcome.case.broker), spreads(outcome)
        figure = key or _headline(values)
        rows.setdefault(row, {})[_library(outcome)] = _pivot_cell(outcome, outcomes, figure)
        if figure in values:
            units[row] = BY_KEY[figure].header
    table = [
        [*row, *([units[row]] if key is None else []), *(cells.get(n, "") for n in libraries)]
        for row, cells in rows.items()
        if row in units
    ]
    return markdown(["workload", "broker", *(["figure"] if key is None else []), *libraries], table)


def not_available(outcomes: Sequence[Outcome]) -> list[str]:
    seen: dict[str, None] = {}
    for outcome in outcomes:
        if outcome.skipped:
            seen[
                f"{_library(outcome)} on {outcome.case.broker}, {_title(outcome)}: "
                f"{outcome.skipped}"
            ] = None
    return list(seen)
