"""Cheap lookups on the hot path: coalesced store queries, and revocations kept in memory."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field

import anyio
import anyio.lowlevel


@dataclass(slots=True)
class _Batch:
    keys: set[str] = field(default_factory=set)
    done: anyio.Event = field(default_factory=anyio.Event)
    found: set[str] = field(default_factory=set)
    error: BaseException | None = None


class Coalescer:
    """`await contains(key)` for many keys at once: one `query(keys)` per loop turn."""

    def __init__(self, query: Callable[[Sequence[str]], Awaitable[set[str]]]) -> None:
        self._query = query
        self._batch: _Batch | None = None

    async def contains(self, key: str) -> bool:
        batch = self._batch
        if batch is not None:
            batch.keys.add(key)
            await batch.done.wait()
            if batch.error is not None:
                raise batch.error
            return key in batch.found
        batch = self._batch = _Batch({key})
        try:
            await anyio.lowlevel.cancel_shielded_checkpoint()  # the others of this turn join here
            self._batch = None
            batch.found = await self._query(sorted(batch.keys))
        except BaseException as exc:
            batch.error = exc
            raise
        finally:
            self._batch = None
            batch.done.set()
        return key in batch.found


class RevokedIds:
    """Task ids revoked by broadcast, each forgotten after `ttl` seconds."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._until: dict[str, float] = {}

    def add(self, task_ids: Iterable[str]) -> None:
        now = time.monotonic()
        self._until = {key: until for key, until in self._until.items() if until > now}
        for task_id in task_ids:
            self._until[task_id] = now + self.ttl

    def __contains__(self, task_id: object) -> bool:
        until = self._until.get(task_id) if isinstance(task_id, str) else None
        return until is not None and until > time.monotonic()
