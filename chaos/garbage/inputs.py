"""One garbage input and how to tell where it ended.

Each input carries a mark of its own in its bytes wherever the garbage leaves room (the
envelope's id, a header, the argument), so the input is found again in what the task records
when it runs, or in a dead letter's body. An input that may come out of the broker with its
mark gone (a stream entry without an envelope, a row whose body is a number) is `anonymous`:
it is accounted for by a dead letter that carries no mark at all.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Input:
    kind: str  # what was done to it, e.g. "chain: [1]", "stream entry without 'b'"
    body: bytes  # the envelope bytes, or what stands for them
    mark: str
    task_id: str | None = None  # the id a run records, when the envelope still has one
    anonymous: bool = False


def mark_of(index: int, token: str) -> str:
    """A mark that appears nowhere else: index and a per-run token, letters and digits only."""
    return f"garbage{token}n{index:05d}"
