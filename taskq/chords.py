"""Counting a chord's members atomically with publishing its callback: the interface a
broker may implement for the workflow (`taskq.workflow`), and what it is given.

Without one, the result store counts (`ResultStore.chord_part_done`) and the last member
reads the results from it and launches the callback. With Redis as both broker and store,
`taskq.brokers.redis_chords` records a member's result, its count and, with the last
member, the callback's publish in one script, so that no crash in between can lose the
callback. Which one an app uses is chosen where its backends are built (`taskq.backends`).

A chord grows (`Task.add_to_chord`) by members recorded where it is counted, before they
are published (`ChordCounter.add_member`, `ResultStore.chord_add_member`): the step that
counts reads how many were added, so the size its members carry plus that number is the
chord's size, and counting stays one step.

Imports nothing of taskq but `message`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Protocol

from taskq.message import Message

# Stands where a chord callback's results (or a member's failure) go in its envelope.
# Random per process, so no argument of a user's can be taken for it.
CHORD_RESULTS = f"taskq-chord-results-{uuid.uuid4().hex}"


@dataclass(frozen=True, slots=True)
class ChordCallback:
    """What the last member of a chord publishes, as JSON envelopes: `callback`, with
    `CHORD_RESULTS` where the ordered results go (unless its signature is immutable), or,
    when a member failed, `failure`, with `CHORD_RESULTS` where that member's failure goes."""

    callback: Message
    failure: Message


@dataclass(frozen=True, slots=True)
class ChordPart:
    """A finished chord member, for a `ChordCounter`. `outcome` is JSON: the member's result
    or, when `failed`, its failure."""

    group_id: str
    index: int
    size: int
    outcome: bytes
    failed: bool
    publishes: ChordCallback


class ChordCounter(Protocol):
    """Records a chord member and, with the last one, publishes the callback in one step."""

    async def chord_part_done(self, part: ChordPart) -> bool:
        """Record `part`; True for the one call that published the callback (or failure)."""
        ...

    async def add_member(self, queue: str, group_id: str, token: str, task_id: str) -> Added:
        """Add a member to the chord `group_id` whose callback goes to `queue`, once per
        `token`: called again with it, the member added the first time."""
        ...


@dataclass(frozen=True, slots=True, order=True)
class Added:
    """A member added to a chord: its position among the added ones (0 for the first), and
    the id of the task whose result it is."""

    position: int
    task_id: str

    def encode(self) -> str:
        return f"{self.position}:{self.task_id}"

    @classmethod
    def decode(cls, raw: bytes | str) -> Added:
        text = raw.decode() if isinstance(raw, bytes) else raw
        position, task_id = text.split(":", 1)
        return cls(int(position), task_id)
