"""The lease machinery shared by the brokers that keep messages themselves (memory, SQLite).

A claim hands out a `Lease` (queue, message id, token) and the message becomes
available again when the lease runs out. The deliveries, the consume loop with its
prefetch bound and the idle backoff live here once; each broker supplies the claim
and the four lease operations of `LeaseStore`.
"""

from __future__ import annotations

import time
from abc import abstractmethod
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Protocol

import anyio

from taskq.brokers.base import BrokerOptions, Delivery
from taskq.message import Message
from taskq.wakeups import Backoff, wake_generation


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


def outgoing(items: Sequence[tuple[Message, str]], options: BrokerOptions) -> list[Outgoing]:
    """Encode every message first, so that one too large enqueues nothing."""
    now = time.time()
    return [
        Outgoing(queue, options.encode(message), message.priority or 0, message.eta or now)
        for message, queue in items
    ]


class LeasedDelivery(Delivery):
    """A claimed message, leased to its consumer until it is settled once."""

    __slots__ = ("_lease", "_on_settled", "_store")

    def __init__(self, claimed: Claimed, store: LeaseStore, on_settled: Callable[[], None]) -> None:
        super().__init__(claimed.body, claimed.lease.queue, claimed.delivery_count)
        self._lease = claimed.lease
        self._store = store
        self._on_settled = on_settled

    async def _ack(self) -> None:
        await self._store.ack_lease(self._lease)

    async def _requeue(self, delay: float | None) -> None:
        await self._store.requeue_lease(self._lease, delay)

    async def _bury(self, reason: str) -> None:
        await self._store.dead_letter_lease(self._lease, reason)

    async def _extend(self, seconds: float) -> None:
        await self._store.extend_lease(self._lease, seconds)

    async def _released(self) -> None:
        self._on_settled()

    async def give_back(self) -> None:
        """Give back a message that was claimed but never handed to the consumer."""
        await self._settle(partial(self._store.requeue_lease, self._lease, None, delivered=False))


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
                await delivery.give_back()


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
