"""Accounting for what a scenario submitted: final states in the result store, dead letters
in the broker. Lost = never reached a final state and not in the dead-letter queue."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from taskq import TaskQ, states
from taskq.message import peek_id
from taskq.stores.base import ResultStore, TaskMeta

CHUNK = 1000  # ids per store round trip


@dataclass
class Tally:
    submitted: int
    succeeded: int = 0
    wrong: dict[str, str] = field(default_factory=dict)  # id -> what it ended as
    lost: list[str] = field(default_factory=list)
    dead_lettered: list[str] = field(default_factory=list)


async def states_of(store: ResultStore, ids: Sequence[str]) -> list[TaskMeta | None]:
    metas: list[TaskMeta | None] = []
    for start in range(0, len(ids), CHUNK):
        metas += await store.get_many(ids[start : start + CHUNK])
    return metas


class Unfinished:
    """The submitted ids without a final state yet; each look asks only about those."""

    def __init__(self, app: TaskQ, ids: Sequence[str]) -> None:
        self._app = app
        self.ids = list(ids)

    async def count(self) -> int:
        store = await self._app.connected_store()
        metas = await states_of(store, self.ids)
        self.ids = [i for i, meta in zip(self.ids, metas, strict=True) if not _final(meta)]
        return len(self.ids)


async def dead_lettered_ids(app: TaskQ, queue: str) -> set[str | None]:
    broker = await app.connected_broker()
    letters = await broker.dead_letters(queue, limit=max(1, await broker.dead_letter_length(queue)))
    return {peek_id(letter.body) for letter in letters}


async def tally(app: TaskQ, queue: str, expected: Mapping[str, Any]) -> Tally:
    """Where each submitted id (`expected`: id -> its right result) ended."""
    ids = list(expected)
    metas = await states_of(await app.connected_store(), ids)
    dead = await dead_lettered_ids(app, queue)
    found = Tally(len(ids))
    for task_id, meta in zip(ids, metas, strict=True):
        if meta is not None and _final(meta):
            if meta.status == states.SUCCESS and meta.result == expected[task_id]:
                found.succeeded += 1
            else:
                found.wrong[task_id] = f"{meta.status} {meta.exc_type or meta.result!r}"
        elif task_id in dead:
            found.dead_lettered.append(task_id)
        else:
            found.lost.append(task_id)
    return found


def _final(meta: TaskMeta | None) -> bool:
    return meta is not None and meta.status in states.READY_STATES
