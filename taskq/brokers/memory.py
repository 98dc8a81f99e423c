"""The in-memory broker, and the lease machinery the SQLite broker shares with it.

Both brokers keep messages in one place and lease them to consumers: a claim hands
out a `Lease` (queue, message id, token) and the message becomes available again
when the lease runs out. Everything around that — the deliveries, the consume loop
with its prefetch bound, the idle backoff and the in-process wake-ups — lives here
once; each broker supplies the claim and the four lease operations of `LeaseStore`.

The memory broker's state belongs to its URL, so every `MemoryBroker("memory://x")`
in the process (a producer app and an in-process worker) sees the same queues.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
import weakref
from abc import abstractmethod
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Protocol

import anyio
import anyio.lowlevel

from taskq.brokers.base import BrokerOptions, DeadLetter, Delivery
from taskq.message import Message, encode

REJECTED = "rejected"
FIRST_POLL_DELAY = 0.005
SUBSCRIBER_BUFFER = 10_000


# --- in-process wake-ups -------------------------------------------------------------


@dataclass(slots=True)
class _Signal:
    generation: int = 0
    events: set[anyio.Event] = field(default_factory=set)


# An Event belongs to the event loop it was made in, so the registry is per loop: a
# publisher wakes the waiters of its own loop, waiters elsewhere find out when they poll.
_signals: anyio.lowlevel.RunVar[dict[str, _Signal]] = anyio.lowlevel.RunVar("taskq_wakeups")


def _signal(key: str) -> _Signal:
    try:
        signals = _signals.get()
    except LookupError:
        signals = {}
        _signals.set(signals)
    signal = signals.get(key)
    if signal is None:
        signal = signals[key] = _Signal()
    return signal


def wake(key: str) -> None:
    """Wake whoever in this event loop waits for news about `key`."""
    signal = _signal(key)
    signal.generation += 1
    for event in signal.events:
        event.set()


def wake_generation(key: str) -> int:
    """Read before polling; `Backoff.sleep` returns at once if a wake came since."""
    return _signal(key).generation


class Backoff:
    """Sleeps between empty polls: from a few ms, doubling up to `ceiling`, cut short by `wake`."""

    def __init__(self, ceiling: float) -> None:
        self._ceiling = max(ceiling, FIRST_POLL_DELAY)
        self._delay = FIRST_POLL_DELAY

    def reset(self) -> None:
        self._delay = FIRST_POLL_DELAY

    async def sleep(self, key: str, seen: int, due_in: float | None = None) -> None:
        """Sleep the next delay (never past `due_in`) unless `key` is woken or was since `seen`."""
        timeout = self._delay if due_in is None else max(0.0, min(self._delay, due_in))
        self._delay = min(self._delay * 2, self._ceiling)
        signal = _signal(key)
        if signal.generation != seen:
            await anyio.lowlevel.checkpoint()
            return
        event = anyio.Event()
        signal.events.add(event)
        try:
            with anyio.move_on_after(timeout):
                await event.wait()
        finally:
            signal.events.discard(event)


# --- leases, deliveries and the consume loop ------------------------------------------


@dataclass(frozen=True, slots=True)
class Lease:
    """Who holds a message: the token changes with every claim, so a stale holder is refused."""

    queue: str
    id: int
    token: int


@dataclass(frozen=True, slots=True)
class Claimed:
    lease: Lease
    body: bytes
    delivery_count: int


@dataclass(frozen=True, slots=True)
class Outgoing:
    queue: str
    body: bytes
    priority: int
    available_at: float


class LeaseStore(Protocol):
    """The operations on a held message; each is a no-op when `lease` is no longer current."""

    async def ack_lease(self, lease: Lease) -> None: ...

    async def requeue_lease(
        self, lease: Lease, delay: float | None, *, delivered: bool = True
    ) -> None:
        """Make it available again; `delivered=False` takes back the claim's delivery count."""
        ...

    async def dead_letter_lease(self, lease: Lease, reason: str) -> None: ...

    async def extend_lease(self, lease: Lease, seconds: float) -> None: ...


Claim = Callable[[int], Awaitable[tuple[list[Claimed], float | None]]]


def outgoing(items: Sequence[tuple[Message, str]], max_bytes: int) -> list[Outgoing]:
    """Encode every message first, so that one too large enqueues nothing."""
    now = time.time()
    return [
        Outgoing(queue, encode(message, max_bytes), message.priority or 0, message.eta or now)
        for message, queue in items
    ]


def queue_names(queues: Sequence[str]) -> list[str]:
    if isinstance(queues, str):
        raise TypeError("queues must be a sequence of queue names, not a string")
    names = list(dict.fromkeys(queues))
    if not names:
        raise ValueError("consume needs at least one queue")
    return names


class LeasedDelivery:
    """A claimed message, leased to its consumer until it is settled once."""

    __slots__ = ("_lease", "_on_settled", "_settled", "_store", "body", "delivery_count", "queue")

    def __init__(self, claimed: Claimed, store: LeaseStore, on_settled: Callable[[], None]) -> None:
        self.body = claimed.body
        self.queue = claimed.lease.queue
        self.delivery_count = claimed.delivery_count
        self._lease = claimed.lease
        self._store = store
        self._on_settled = on_settled
        self._settled = False

    async def ack(self) -> None:
        await self._settle(partial(self._store.ack_lease, self._lease))

    async def nack(self, requeue: bool = True, delay: float | None = None) -> None:
        if not requeue:
            await self.dead_letter(REJECTED)
            return
        await self._settle(partial(self._store.requeue_lease, self._lease, delay))

    async def dead_letter(self, reason: str) -> None:
        await self._settle(partial(self._store.dead_letter_lease, self._lease, reason))

    async def extend(self, seconds: float) -> None:
        if not self._settled:
            await self._store.extend_lease(self._lease, seconds)

    async def _release(self) -> None:
        """Give back a message that was claimed but never handed to the consumer."""
        await self._settle(partial(self._store.requeue_lease, self._lease, None, delivered=False))

    async def _settle(self, operation: Callable[[], Awaitable[None]]) -> None:
        # Settled before the call: if it fails, the lease simply runs out and the
        # message comes back, which is the at-least-once answer to a failed ack anyway.
        if self._settled:
            return
        self._settled = True
        try:
            await operation()
        finally:
            self._on_settled()


class _Slots:
    """The consumer's unsettled deliveries, counted against its prefetch."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._used = 0
        self._freed = anyio.Event()

    @property
    def free(self) -> int:
        return self._size - self._used

    def take(self, count: int) -> None:
        self._used += count

    def release(self) -> None:
        self._used -= 1
        self._freed.set()

    async def wait_free(self) -> None:
        while self._used >= self._size:
            self._freed = anyio.Event()
            await self._freed.wait()


async def consume_leases(
    store: LeaseStore, claim: Claim, wake_key: str, prefetch: int, polling_interval: float
) -> AsyncGenerator[Delivery, None]:
    """Claim in batches of the free prefetch and yield; sleep with backoff when idle."""
    if prefetch < 1:
        raise ValueError("prefetch must be at least 1")
    slots = _Slots(prefetch)
    backoff = Backoff(polling_interval)
    pending: deque[LeasedDelivery] = deque()
    try:
        while True:
            await slots.wait_free()
            seen = wake_generation(wake_key)
            # Shielded: a claim whose result we dropped would sit leased for the whole timeout.
            with anyio.CancelScope(shield=True):
                claimed, due_in = await claim(slots.free)
            if not claimed:
                await backoff.sleep(wake_key, seen, due_in)
                continue
            backoff.reset()
            slots.take(len(claimed))
            pending.extend(LeasedDelivery(item, store, slots.release) for item in claimed)
            while pending:
                yield pending.popleft()
    finally:
        with anyio.CancelScope(shield=True):
            for delivery in pending:
                await delivery._release()


class Subscription(AsyncIterator[bytes]):
    """Broadcast payloads of one channel; `_poll` returns those that arrived since its last call."""

    def __init__(self, wake_key: str, polling_interval: float) -> None:
        self._key = wake_key
        self._backoff = Backoff(polling_interval)
        self._buffer: deque[bytes] = deque()
        self._closed = False

    async def __anext__(self) -> bytes:
        while not self._buffer:
            if self._closed:
                raise StopAsyncIteration
            seen = wake_generation(self._key)
            self._buffer.extend(await self._poll())
            if not self._buffer:
                await self._backoff.sleep(self._key, seen)
        self._backoff.reset()
        return self._buffer.popleft()

    async def aclose(self) -> None:
        self._closed = True

    @abstractmethod
    async def _poll(self) -> list[bytes]: ...


def channel_key(base: str, channel: str) -> str:
    """The wake-up key of a broadcast channel of the broker whose own key is `base`."""
    # NUL cannot appear in a URL or a path, so this never collides with a queue's key.
    return f"{base}\0broadcast\0{channel}"


# --- the memory broker -----------------------------------------------------------------


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


class MemoryBroker:
    """A broker in this process's memory, shared by every MemoryBroker with the same URL.

    For unit tests and eager use: nothing survives the process. Lease expiry is
    noticed when consuming; publishing wakes the consumers of the same event loop.
    """

    def __init__(self, url: str, options: BrokerOptions) -> None:
        self._url = url
        self._options = options
        self._state = _state_for(url)

    async def connect(self) -> None:
        await anyio.lowlevel.checkpoint()

    async def close(self) -> None:
        await anyio.lowlevel.checkpoint()

    async def publish(self, message: Message, queue: str) -> None:
        await self.publish_many([(message, queue)])

    async def publish_many(self, items: Sequence[tuple[Message, str]]) -> None:
        messages = outgoing(items, self._options.max_message_bytes)
        now = time.time()
        with self._state.lock:
            for message in messages:
                self._state.add(message, now)
        wake(self._url)

    def consume(self, queues: Sequence[str], prefetch: int) -> AsyncGenerator[Delivery, None]:
        claim = partial(self._claim, queue_names(queues))
        return consume_leases(self, claim, self._url, prefetch, self._options.polling_interval)

    async def queue_length(self, queue: str) -> int:
        with self._state.lock:
            found = self._state.queues.get(queue)
            return len(found.entries) if found else 0

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

    async def purge_dead_letters(self, queue: str) -> int:
        with self._state.lock:
            return len(self._state.dead.pop(queue, []))

    async def broadcast(self, channel: str, payload: bytes) -> None:
        with self._state.lock:
            subscribers = list(self._state.subscribers.get(channel, ()))
        for subscriber in subscribers:
            subscriber.deliver(payload)
        wake(channel_key(self._url, channel))

    def subscribe(self, channel: str) -> AsyncIterator[bytes]:
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
                letter = DeadLetter(lease.queue, reason, entry.body, time.time())
                self._state.dead.setdefault(lease.queue, []).append(letter)

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
            return self._state.claim(names, limit, self._options.visibility_timeout)

    def _unsubscribe(self, channel: str, subscription: _MemorySubscription) -> None:
        with self._state.lock:
            self._state.subscribers.get(channel, weakref.WeakSet()).discard(subscription)


class _MemorySubscription(Subscription):
    def __init__(self, broker: MemoryBroker, channel: str) -> None:
        super().__init__(channel_key(broker._url, channel), broker._options.polling_interval)
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
