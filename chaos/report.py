"""A scenario's outcome: its figures, each with what was expected and whether it held, and
the Markdown tables the run prints (docs/reliability.md quotes them)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

PASS, FAIL, SKIP = "pass", "FAIL", "skipped"


@dataclass(frozen=True, slots=True)
class Figure:
    """One line of a scenario's table. `ok` is None for a figure that is only reported."""

    name: str
    value: str
    expected: str = ""
    ok: bool | None = None


def check(name: str, value: object, expected: str, ok: bool) -> Figure:
    return Figure(name, _shown(value), expected, ok)


def info(name: str, value: object) -> Figure:
    return Figure(name, _shown(value))


@dataclass
class Outcome:
    scenario: str
    title: str
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # why a check failed: ids, log excerpts
    seconds: float = 0.0
    skipped: str | None = None

    @property
    def result(self) -> str:
        if self.skipped is not None:
            return SKIP
        return FAIL if any(figure.ok is False for figure in self.figures) else PASS

    @property
    def failed_checks(self) -> list[str]:
        return [figure.name for figure in self.figures if figure.ok is False]


def table(outcome: Outcome) -> str:
    """The scenario's heading, its table and its notes, as Markdown."""
    heading = f"### {outcome.scenario}: {outcome.result} ({outcome.seconds:.0f} s)\n\n"
    heading += f"{outcome.title}\n"
    if outcome.skipped is not None:
        return f"{heading}\nSkipped: {outcome.skipped}\n"
    rows = ["| figure | value | expected | |", "|---|---|---|---|"]
    for figure in outcome.figures:
        mark = {True: "ok", False: "**FAIL**", None: ""}[figure.ok]
        rows.append(f"| {figure.name} | {figure.value} | {figure.expected} | {mark} |")
    notes = "".join(f"\n- {note}" for note in outcome.notes)
    return f"{heading}\n" + "\n".join(rows) + ("\n" + notes if notes else "") + "\n"


def summary(outcomes: Sequence[Outcome]) -> str:
    rows = ["| scenario | result | seconds | failed checks |", "|---|---|---|---|"]
    for outcome in outcomes:
        failed = ", ".join(outcome.failed_checks) or outcome.skipped or ""
        rows.append(f"| {outcome.scenario} | {outcome.result} | {outcome.seconds:.0f} | {failed} |")
    return "\n".join(rows) + "\n"


def _shown(value: object) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.2f} s"
    return str(value)
