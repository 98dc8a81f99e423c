"""Cheap lookups on the hot path: coalesced store queries, and revocations kept in memory."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable, Sequence

from taskq.batching import Batcher


class Coalescer:
    """`await contains(key)` for many keys at once: one `query(keys)` per loop turn."""

    def __init__(self, query: Callable[[Sequence[str]], Awaitable[set[str]]]) -> None:
        self._query = query
        self._batches: Batcher[str, set[str]] = Batcher(self._ask)

    async def contains(self, key: str) -> bool:
        return key in await self._batches.submit(key)

    async def _ask(self, keys: list[str]) -> set[str]:
        return await self._query(sorted(set(keys)))


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

    def ids(self) -> list[str]:
        """The ids revoked now."""
        now = time.monotonic()
        return [task_id for task_id, until in self._until.items() if until > now]

    def __contains__(self, task_id: object) -> bool:
        until = self._until.get(task_id) if isinstance(task_id, str) else None
        return until is not None and until > time.monotonic()
