"""Counting a chord's members atomically with publishing its callback: the interface a
broker may implement for the workflow (`taskq.workflow`), and what it is given.

Without one, the result store counts (`ResultStore.chord_part_done`) and the last member
reads the results from it and launches the callback. With Redis as both broker and store,
`taskq.brokers.redis_chords` records a member's result, its count and, with the last member,
the callback's publish in one script, so that no crash in between can lose the callback.
Which one an app uses is chosen where its backends are built (`taskq.backends`).

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
