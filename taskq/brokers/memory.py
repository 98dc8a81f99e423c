"""The in-memory broker, for tests and eager use; its leases work as the SQLite broker's.

The memory broker's state belongs to its URL, so every `MemoryBroker("memory://x")`
in the process (a producer app and an in-process worker) sees the same queues.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
import weakref
from collections import deque
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from functools import partial

import anyio
import anyio.lowlevel

from taskq.brokers.base import Broadcasts, Broker, DeadLetter, Delivery, Scheduled
from taskq.brokers.leases import (
    Claimed,
    Lease,
    Outgoing,
    Subscription,
    channel_key,
    consume_leases,
    outgoing,
)
from taskq.config import Settings
from taskq.message import Message
from taskq.wakeups import wake

SUBSCRIBER_BUFFER = 10_000


@dataclass(slots=True)
class _Entry:
    id: int
    body: bytes
    priority: int
    available_at: float
    delivery_count: int = 0
    token: int | None = None
    version: int = 0


class _Queue:
    """One queue: `ready` ordered by (-priority, id), `scheduled` (delayed or leased) by time.

    Heap items carry the entry's version when pushed; an item whose entry has moved
    on since (settled, requeued, extended) is stale and skipped.
    """

    def __init__(self) -> None:
        self.entries: dict[int, _Entry] = {}
        self._ready: list[tuple[int, int, int]] = []
        self._scheduled: list[tuple[float, int, int]] = []

    def place(self, entry: _Entry, now: float) -> None:
        entry.version += 1
        if entry.available_at <= now:
            heapq.heappush(self._ready, (-entry.priority, entry.id, entry.version))
        else:
            heapq.heappush(self._scheduled, (entry.available_at, entry.id, entry.version))

    def head(self, now: float) -> tuple[int, int] | None:
        """The (-priority, id) of the first available entry."""
        while self._scheduled and self._scheduled[0][0] <= now:
            _, entry_id, version = heapq.heappop(self._scheduled)
            if self._current(entry_id, version):
                heapq.heappush(self._ready, (self._ready_key(entry_id), entry_id, version))
        while self._ready and not self._current(*self._ready[0][1:]):
            heapq.heappop(self._ready)
        return self._ready[0][:2] if self._ready else None

    def pop(self) -> _Entry:
        return self.entries[heapq.heappop(self._ready)[1]]

    def next_due(self) -> float | None:
        while self._scheduled and not self._current(*self._scheduled[0][1:]):
            heapq.heappop(self._scheduled)
        return self._scheduled[0][0] if self._scheduled else None

    def not_due(self, now: float) -> list[_Entry]:
        """The unleased entries due after `now`, soonest first."""
        waiting = [e for e in self.entries.values() if e.token is None and e.available_at > now]
        return sorted(waiting, key=lambda entry: (entry.available_at, entry.id))

    def purge(self, now: float) -> int:
        doomed = [e.id for e in self.entries.values() if e.token is None or e.available_at <= now]
        for entry_id in doomed:
            del self.entries[entry_id]
        self._ready = [item for item in self._ready if self._current(*item[1:])]
        self._scheduled = [item for item in self._scheduled if self._current(*item[1:])]
        heapq.heapify(self._ready)
        heapq.heapify(self._scheduled)
        return len(doomed)

    def _ready_key(self, entry_id: int) -> int:
        return -self.entries[entry_id].priority

    def _current(self, entry_id: int, version: int) -> bool:
        entry = self.entries.get(entry_id)
        return entry is not None and entry.version == version


class _MemoryState:
    """Everything behind one memory:// URL. The lock makes it safe to share across threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.queues: dict[str, _Queue] = {}
        self.dead: dict[str, list[DeadLetter]] = {}
        self.subscribers: dict[str, weakref.WeakSet[_MemorySubscription]] = {}
        self._ids = itertools.count(1)
        self._tokens = itertools.count(1)

    def bury(self, queue: str, body: bytes, reason: str) -> None:
        letter = DeadLetter(str(next(self._ids)), queue, reason, body, time.time())
        self.dead.setdefault(queue, []).append(letter)

    def add(self, message: Outgoing, now: float) -> None:
        entry = _Entry(next(self._ids), message.body, message.priority, message.available_at)
        queue = self.queues.setdefault(message.queue, _Queue())
        queue.entries[entry.id] = entry
        queue.place(entry, now)

    def claim(
        self, names: list[str], limit: int, lease_seconds: float
    ) -> tuple[list[Claimed], float | None]:
        now = time.time()
        queues = [(name, self.queues.setdefault(name, _Queue())) for name in names]
        claimed: list[Claimed] = []
        while len(claimed) < limit:
            heads = [(head, name, q) for name, q in queues if (head := q.head(now)) is not None]
            if not heads:
                break
            _, name, queue = min(heads, key=lambda item: item[0])
            claimed.append(self._lease(name, queue, now + lease_seconds, now))
        if claimed:
            return claimed, None
        dues = [due for _, queue in queues if (due := queue.next_due()) is not None]
        return [], (min(dues) - now if dues else None)

    def held(self, lease: Lease) -> tuple[_Queue, _Entry] | None:
        queue = self.queues.get(lease.queue)
        entry = queue.entries.get(lease.id) if queue else None
        if queue is None or entry is None or entry.token != lease.token:
            return None
        return queue, entry

    def _lease(self, name: str, queue: _Queue, until: float, now: float) -> Claimed:
        entry = queue.pop()
        entry.token = next(self._tokens)
        entry.delivery_count += 1
        entry.available_at = until
        queue.place(entry, now)
        return Claimed(Lease(name, entry.id, entry.token), entry.body, entry.delivery_count)


_states: dict[str, _MemoryState] = {}
_states_lock = threading.Lock()


def _state_for(url: str) -> _MemoryState:
    with _states_lock:
        return _states.setdefault(url, _MemoryState())


class MemoryBroker(Broker):
    """A broker in this process's memory, shared by every MemoryBroker with the same URL.

    For unit tests and eager use: nothing survives the process. Lease expiry is
    noticed when consuming; publishing wakes the consumers of the same event loop.
    """

    def __init__(self, url: str, conf: Settings) -> None:
        super().__init__(url, conf)
        self._url = url
        self._state = _state_for(url)

    async def connect(self) -> None:
        await anyio.lowlevel.checkpoint()

    async def close(self) -> None:
        await anyio.lowlevel.checkpoint()

    async def publish_many(self, items: Sequence[tuple[Message, str]]) -> None:
        messages = outgoing(items, self.options)
        now = time.time()
        with self._state.lock:
            for message in messages:
                self._state.add(message, now)
        wake(self._url)

    def _consume(self, queues: list[str], prefetch: int) -> AsyncGenerator[Delivery, None]:
        claim = partial(self._claim, queues)
        return consume_leases(self, claim, self._url, prefetch, self.options.polling_interval)

    async def queue_length(self, queue: str) -> int:
        with self._state.lock:
            found = self._state.queues.get(queue)
            return len(found.entries) if found else 0

    async def scheduled(self, queue: str, limit: int = 100) -> list[Scheduled]:
        with self._state.lock:
            found = self._state.queues.get(queue)
            waiting = found.not_due(time.time()) if found else []
        return [Scheduled(entry.body, entry.available_at) for entry in waiting[:limit]]

    async def scheduled_length(self, queue: str) -> int:
        with self._state.lock:
            found = self._state.queues.get(queue)
            return len(found.not_due(time.time())) if found else 0

    async def purge(self, queue: str) -> int:
        with self._state.lock:
            found = self._state.queues.get(queue)
            return found.purge(time.time()) if found else 0

    async def dead_letters(self, queue: str, limit: int = 100) -> list[DeadLetter]:
        with self._state.lock:
            return self._state.dead.get(queue, [])[:limit]

    async def dead_letter_length(self, queue: str) -> int:
        with self._state.lock:
            return len(self._state.dead.get(queue, []))

    async def add_dead_letter(self, queue: str, body: bytes, reason: str) -> None:
        with self._state.lock:
            self._state.bury(queue, body, reason)

    async def remove_dead_letters(self, queue: str, ids: Sequence[str]) -> int:
        wanted = set(ids)
        with self._state.lock:
            letters = self._state.dead.get(queue, [])
            kept = [letter for letter in letters if letter.id not in wanted]
            self._state.dead[queue] = kept
            return len(letters) - len(kept)

    async def purge_dead_letters(self, queue: str) -> int:
        with self._state.lock:
            return len(self._state.dead.pop(queue, []))

    async def broadcast(self, channel: str, payload: bytes) -> None:
        with self._state.lock:
            subscribers = list(self._state.subscribers.get(channel, ()))
        for subscriber in subscribers:
            subscriber.deliver(payload)
        wake(channel_key(self._url, channel))

    def subscribe(self, channel: str) -> Broadcasts:
        subscription = _MemorySubscription(self, channel)
        with self._state.lock:
            self._state.subscribers.setdefault(channel, weakref.WeakSet()).add(subscription)
        return subscription

    # LeaseStore

    async def ack_lease(self, lease: Lease) -> None:
        with self._state.lock:
            held = self._state.held(lease)
            if held:
                del held[0].entries[lease.id]

    async def requeue_lease(
        self, lease: Lease, delay: float | None, *, delivered: bool = True
    ) -> None:
        with self._state.lock:
            held = self._state.held(lease)
            if held is None:
                return
            queue, entry = held
            now = time.time()
            entry.token = None
            entry.available_at = now + (delay or 0.0)
            if not delivered:
                entry.delivery_count -= 1
            queue.place(entry, now)
        wake(self._url)

    async def dead_letter_lease(self, lease: Lease, reason: str) -> None:
        with self._state.lock:
            held = self._state.held(lease)
            if held:
                queue, entry = held
                del queue.entries[lease.id]
                self._state.bury(lease.queue, entry.body, reason)

    async def extend_lease(self, lease: Lease, seconds: float) -> None:
        with self._state.lock:
            held = self._state.held(lease)
            if held:
                queue, entry = held
                now = time.time()
                entry.available_at = now + seconds
                queue.place(entry, now)

    async def _claim(self, names: list[str], limit: int) -> tuple[list[Claimed], float | None]:
        with self._state.lock:
            return self._state.claim(names, limit, self.options.visibility_timeout)

    def _unsubscribe(self, channel: str, subscription: _MemorySubscription) -> None:
        with self._state.lock:
            self._state.subscribers.get(channel, weakref.WeakSet()).discard(subscription)


class _MemorySubscription(Subscription):
    def __init__(self, broker: MemoryBroker, channel: str) -> None:
        super().__init__(channel_key(broker._url, channel), broker.options.polling_interval)
        self._broker = broker
        self._channel = channel
        self._inbox: deque[bytes] = deque(maxlen=SUBSCRIBER_BUFFER)

    def deliver(self, payload: bytes) -> None:
        self._inbox.append(payload)

    async def aclose(self) -> None:
        self._broker._unsubscribe(self._channel, self)
        await super().aclose()

    async def _poll(self) -> list[bytes]:
        return [self._inbox.popleft() for _ in range(len(self._inbox))]
