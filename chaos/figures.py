"""The figures every delivery scenario reports: submitted, lost, wrong final states,
duplicate executions against their bound, time to recover, and whether the workers lived."""

from __future__ import annotations

import statistics
from collections.abc import Sequence

from chaos.accounting import Tally
from chaos.processes import Processes
from chaos.report import Figure, check, info

SHOWN_IDS = 5  # ids quoted in a failed check's note


def delivery(
    tally: Tally,
    duplicates: int,
    disruptions: int,
    concurrency: int,
    what: str = "kills",
) -> list[Figure]:
    """Submitted, lost, wrong states and duplicates, which may be at most the tasks that
    were running where it happened: `disruptions` x `concurrency`."""
    bound = disruptions * concurrency
    wrong = len(tally.wrong) + len(tally.dead_lettered)
    return [
        info("tasks submitted", tally.submitted),
        check("tasks lost", len(tally.lost), "0", not tally.lost),
        check("wrong final states", wrong, "0 (all SUCCESS, right result)", wrong == 0),
        check(
            "duplicate executions",
            duplicates,
            f"<= {bound:,} ({disruptions} {what} x concurrency {concurrency})",
            duplicates <= bound,
        ),
    ]


def recovery(delays: Sequence[float], since: str) -> Figure:
    """Time to recover: from each disruption to the next task finishing."""
    if not delays:
        return info(f"time to recover ({since})", "no disruption")
    shown = f"max {max(delays):.2f} s, median {statistics.median(delays):.2f} s"
    return info(f"time to recover ({since} to the next task done)", shown)


def survival(workers: Processes) -> Figure:
    died = workers.died_by_themselves
    spared = len(workers.started) - workers.kills
    value = "yes" if not died else f"no: {len(died)} of {spared} exited by themselves"
    return check("workers stayed alive", value, f"yes ({spared} not killed on purpose)", not died)


def delivery_notes(tally: Tally, workers: Processes) -> list[str]:
    """What a failed check needs to be looked into: some ids, the dead workers' logs."""
    notes = []
    if tally.lost:
        notes.append(f"lost ({len(tally.lost)}), e.g. {', '.join(tally.lost[:SHOWN_IDS])}")
    for task_id, state in list(tally.wrong.items())[:SHOWN_IDS]:
        notes.append(f"wrong final state: {task_id} {state}")
    if tally.dead_lettered:
        shown = ", ".join(tally.dead_lettered[:SHOWN_IDS])
        notes.append(f"dead-lettered ({len(tally.dead_lettered)}), e.g. {shown}")
    notes += [
        f"worker exited by itself: {worker.describe()}" for worker in workers.died_by_themselves
    ]
    return notes
