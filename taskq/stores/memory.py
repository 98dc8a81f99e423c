"""The in-memory result store, for unit tests and eager use.

Also home of `Waiters`, the in-process wake-up registry that `wait()` uses here
and in the SQLite store.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import anyio

from taskq.errors import TimeoutError
from taskq.stores.base import StoreOptions, TaskMeta

V = TypeVar("V")

FIRST_POLL_DELAY = 0.005


class _Waiter:
    """One waiting coroutine: its event and the loop the event belongs to."""

    __slots__ = ("event", "loop")

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.event = asyncio.Event()

    def wake(self) -> None:
        try:
            current: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            current = None
        if current is self.loop:
            self.event.set()
            return
        # asyncio events are not thread-safe: set it from its own loop. The loop
        # may close between the check and the call, which then raises.
        with contextlib.suppress(RuntimeError):
            if not self.loop.is_closed():
                self.loop.call_soon_threadsafe(self.event.set)


class Waiters:
    """Coroutines waiting for task ids to become ready, woken from any thread or loop."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_id: dict[str, set[_Waiter]] = {}

    def notify(self, task_id: str) -> None:
        with self._lock:
            waiters = list(self._by_id.get(task_id, ()))
        for waiter in waiters:
            waiter.wake()

    async def wait_ready(
        self,
        task_id: str,
        fetch: Callable[[str], Awaitable[TaskMeta | None]],
        timeout: float | None,
        max_poll: float | None,
    ) -> TaskMeta:
        """Fetch until the meta is ready, re-checking when notified and, unless
        `max_poll` is None, every few ms backing off up to `max_poll` seconds."""
        with self._watch(task_id) as woken, anyio.move_on_after(timeout):
            for delay in _backoff(max_poll):
                meta = await fetch(task_id)
                if meta is not None and meta.ready:
                    return meta
                with anyio.move_on_after(delay):
                    await woken.wait()
                woken.clear()
        raise TimeoutError(f"task {task_id} was not ready within {timeout} s")

    @contextlib.contextmanager
    def _watch(self, task_id: str) -> Iterator[asyncio.Event]:
        # Registered before the first fetch, so a state set in between is not missed.
        waiter = _Waiter()
        with self._lock:
            self._by_id.setdefault(task_id, set()).add(waiter)
        try:
            yield waiter.event
        finally:
            with self._lock:
                waiters = self._by_id[task_id]
                waiters.discard(waiter)
                if not waiters:
                    del self._by_id[task_id]


def _backoff(max_poll: float | None) -> Iterator[float | None]:
    """Delays between polls: doubling from a few ms up to `max_poll`; None = no polling."""
    delay = None if max_poll is None else min(FIRST_POLL_DELAY, max_poll)
    while True:
        yield delay
        if delay is not None and max_poll is not None:
            delay = min(delay * 2, max_poll)


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
    waiters: Waiters = field(default_factory=Waiters)


_SPACES: dict[str, _Space] = {}


class MemoryStore:
    """A result store in this process's memory.

    Every MemoryStore built with the same URL shares one space, so a producer and
    an in-process worker see the same states. Each operation completes without
    awaiting, which makes it atomic within the event loop.
    """

    def __init__(self, url: str, options: StoreOptions) -> None:
        self._space = _SPACES.setdefault(url, _Space())

    async def connect(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def set_state(self, task_id: str, meta: TaskMeta, ttl: float | None) -> None:
        self._space.metas.put(task_id, meta.encode(), ttl)
        if meta.ready:
            self._space.waiters.notify(task_id)

    async def get(self, task_id: str) -> TaskMeta | None:
        raw = self._space.metas.get(task_id)
        return None if raw is None else TaskMeta.decode(raw)

    async def wait(self, task_id: str, timeout: float | None) -> TaskMeta:
        return await self._space.waiters.wait_ready(task_id, self.get, timeout, max_poll=None)

    async def forget(self, task_id: str) -> None:
        self._space.metas.pop(task_id)

    async def chord_part_done(self, group_id: str, task_id: str, size: int) -> bool:
        if group_id in self._space.chords_done:
            return False
        members = self._space.chord_members.setdefault(group_id, set())
        members.add(task_id)
        if len(members) < size:
            return False
        del self._space.chord_members[group_id]
        self._space.chords_done.add(group_id)
        return True

    async def set_if_absent(self, key: str, value: bytes, ttl: float) -> bool:
        if self._space.keys.get(key) is not None:
            return False
        self._space.keys.put(key, value, ttl)
        return True

    async def lease(self, name: str, owner: str, ttl: float) -> bool:
        holder = self._space.leases.get(name)
        if holder is not None and holder != owner:
            return False
        self._space.leases.put(name, owner, ttl)
        return True

    async def revoke(self, task_ids: Sequence[str], ttl: float) -> None:
        for task_id in task_ids:
            self._space.revoked.put(task_id, True, ttl)

    async def revoked(self, task_ids: Sequence[str]) -> set[str]:
        return {task_id for task_id in task_ids if self._space.revoked.get(task_id)}
