"""The in-memory result store, for unit tests and eager use."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from taskq.chords import Added
from taskq.config import Settings
from taskq.stores.base import ResultStore, StoreOptions, TaskMeta, announce_ready, wait_until_ready

V = TypeVar("V")

FIRST_POLL_DELAY = 0.005


class _Expiring(Generic[V]):
    """A dict whose entries expire; expiry is checked when an entry is read."""

    def __init__(self) -> None:
        self._items: dict[str, tuple[V, float | None]] = {}

    def get(self, key: str) -> V | None:
        item = self._items.get(key)
        if item is None:
            return None
        value, expires_at = item
        if expires_at is not None and expires_at <= time.monotonic():
            del self._items[key]
            return None
        return value

    def put(self, key: str, value: V, ttl: float | None) -> None:
        expires_at = None if ttl is None else time.monotonic() + ttl
        self._items[key] = (value, expires_at)

    def remaining(self, key: str) -> float | None:
        """Seconds until the live entry `key` expires (inf: never); None if there is none."""
        item = self._items.get(key)
        if item is None or self.get(key) is None:
            return None
        expires_at = item[1]
        return float("inf") if expires_at is None else expires_at - time.monotonic()

    def live_keys(self) -> set[str]:
        now = time.monotonic()
        return {key for key, (_, ends) in self._items.items() if ends is None or ends > now}

    def pop(self, key: str) -> None:
        self._items.pop(key, None)


@dataclass
class _Space:
    """Everything stored under one memory:// URL."""

    metas: _Expiring[bytes] = field(default_factory=_Expiring)
    keys: _Expiring[bytes] = field(default_factory=_Expiring)
    leases: _Expiring[str] = field(default_factory=_Expiring)
    revoked: _Expiring[bool] = field(default_factory=_Expiring)
    chord_members: dict[str, set[str]] = field(default_factory=dict)
    chords_done: set[str] = field(default_factory=set)
    chords_added: dict[str, dict[str, Added]] = field(default_factory=dict)  # by token


_SPACES: dict[str, _Space] = {}


class MemoryStore(ResultStore):
    """A result store in this process's memory.

    Every MemoryStore built with the same URL shares one space, so a producer and
    an in-process worker see the same states. Each operation completes without
    awaiting, which makes it atomic within the event loop.
    """

    def __init__(self, url: str, conf: Settings) -> None:
        self._url = url
        self._options = StoreOptions.read(conf)
        self._space = _SPACES.setdefault(url, _Space())

    async def connect(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def set_state(self, task_id: str, meta: TaskMeta, ttl: float | None) -> None:
        await self.set_states([meta], ttl)

    async def set_states(self, metas: Sequence[TaskMeta], ttl: float | None) -> None:
        encoded = [(meta, meta.encode()) for meta in metas]
        for meta, raw in encoded:
            self._space.metas.put(meta.task_id, raw, ttl)
            announce_ready(self._url, meta)

    async def get(self, task_id: str) -> TaskMeta | None:
        raw = self._space.metas.get(task_id)
        return None if raw is None else TaskMeta.decode(raw)

    async def get_many(self, task_ids: Sequence[str]) -> list[TaskMeta | None]:
        return [await self.get(task_id) for task_id in task_ids]

    async def wait(self, task_id: str, timeout: float | None) -> TaskMeta:
        poll = self._options.polling_interval
        return await wait_until_ready(self._url, task_id, self.get, timeout, poll)

    async def forget(self, task_id: str) -> None:
        self._space.metas.pop(task_id)

    async def chord_part_done(self, group_id: str, task_id: str, size: int) -> bool:
        if group_id in self._space.chords_done:
            return False
        members = self._space.chord_members.setdefault(group_id, set())
        members.add(task_id)
        if len(members) < size + len(self._space.chords_added.get(group_id, ())):
            return False
        del self._space.chord_members[group_id]
        self._space.chords_done.add(group_id)
        return True

    async def chord_add_member(self, group_id: str, token: str, task_id: str) -> Added:
        added = self._space.chords_added.setdefault(group_id, {})
        return added.setdefault(token, Added(len(added), task_id))

    async def chord_added(self, group_id: str) -> list[str]:
        return [added.task_id for added in self._space.chords_added.get(group_id, {}).values()]

    async def set_if_absent(self, key: str, value: bytes, ttl: float) -> bool:
        if self._space.keys.get(key) is not None:
            return False
        self._space.keys.put(key, value, ttl)
        return True

    async def set_key(self, key: str, value: bytes, ttl: float | None) -> None:
        self._space.keys.put(key, value, ttl)

    async def get_key(self, key: str) -> bytes | None:
        return self._space.keys.get(key)

    async def delete_key(self, key: str) -> None:
        self._space.keys.pop(key)

    async def lease(self, name: str, owner: str, ttl: float) -> bool:
        holder = self._space.leases.get(name)
        if holder is not None and holder != owner:
            return False
        self._space.leases.put(name, owner, ttl)
        return True

    async def lease_remaining(self, name: str) -> float | None:
        return self._space.leases.remaining(name)

    async def lease_holder(self, name: str) -> str | None:
        return self._space.leases.get(name)

    async def revoke(self, task_ids: Sequence[str], ttl: float) -> None:
        for task_id in task_ids:
            self._space.revoked.put(task_id, True, ttl)

    async def revoked(self, task_ids: Sequence[str]) -> set[str]:
        return {task_id for task_id in task_ids if self._space.revoked.get(task_id)}

    async def all_revoked(self) -> set[str]:
        return self._space.revoked.live_keys()
