"""The broker protocol, what a consumer receives, and the URL -> broker factory.

A broker moves encoded envelopes between producers and workers with at-least-once
delivery: a consumed message is leased to its consumer until it is acked, nacked
or dead-lettered; a lease that is not renewed (the worker died) expires and the
message is delivered again.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from taskq.message import Message
from taskq.urls import load_backend_class

DEFAULT_VISIBILITY_TIMEOUT = 3600.0
DEFAULT_POLLING_INTERVAL = 0.2
DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024

DEAD_LETTER_SUFFIX = ".dlq"


@dataclass(frozen=True, slots=True)
class BrokerOptions:
    """What every broker is built with; `transport` holds broker-specific extras."""

    visibility_timeout: float = DEFAULT_VISIBILITY_TIMEOUT
    polling_interval: float = DEFAULT_POLLING_INTERVAL
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    transport: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message that could not be executed, kept with the reason.

    `id` is the broker's own name for this entry, for `remove_dead_letters`.
    """

    id: str
    queue: str
    reason: str
    body: bytes
    failed_at: float


@runtime_checkable
class Delivery(Protocol):
    """One consumed message, leased to this consumer until it is settled.

    `body` is the raw envelope: the worker decodes it (and can dead-letter the
    bytes as they came when they do not decode). Settling a delivery twice is a
    no-op; settling one whose lease was lost does not touch the new holder's lease.
    """

    body: bytes
    queue: str
    delivery_count: int

    @property
    def settled(self) -> bool:
        """Whether it was acked, nacked or dead-lettered (or that was tried) already."""
        ...

    async def ack(self) -> None: ...

    async def nack(self, requeue: bool = True, delay: float | None = None) -> None:
        """Give the message back (after `delay` seconds), or dead-letter it when not `requeue`."""
        ...

    async def dead_letter(self, reason: str) -> None: ...

    async def extend(self, seconds: float) -> None:
        """Renew the lease so the message stays ours for `seconds` more."""
        ...


class Broker(Protocol):
    async def connect(self) -> None: ...

    async def close(self) -> None: ...

    async def publish(self, message: Message, queue: str) -> None:
        """Enqueue one message; honours `message.eta` and `message.priority`."""
        ...

    async def publish_many(self, items: Sequence[tuple[Message, str]]) -> None: ...

    def consume(self, queues: Sequence[str], prefetch: int) -> AsyncGenerator[Delivery, None]:
        """Deliveries from `queues`, never more than `prefetch` unsettled at once."""
        ...

    async def queue_length(self, queue: str) -> int:
        """Messages waiting or leased in `queue`, delayed ones included."""
        ...

    async def purge(self, queue: str) -> int:
        """Delete the messages waiting in `queue`; returns how many."""
        ...

    async def dead_letters(self, queue: str, limit: int = 100) -> list[DeadLetter]:
        """The oldest `limit` dead letters of `queue`."""
        ...

    async def dead_letter_length(self, queue: str) -> int: ...

    async def add_dead_letter(self, queue: str, body: bytes, reason: str) -> None:
        """Keep `body` as a dead letter of `queue` (for a message already acked)."""
        ...

    async def remove_dead_letters(self, queue: str, ids: Sequence[str]) -> int:
        """Delete these dead letters of `queue`; returns how many were there."""
        ...

    async def purge_dead_letters(self, queue: str) -> int: ...

    async def broadcast(self, channel: str, payload: bytes) -> None: ...

    def subscribe(self, channel: str) -> AsyncIterator[bytes]: ...


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
    """A finished chord member, for a broker that counts chords itself (`ChordCounter`).
    `outcome` is JSON: the member's result or, when `failed`, its failure."""

    group_id: str
    index: int
    size: int
    outcome: bytes
    failed: bool
    publishes: ChordCallback


class ChordCounter(Protocol):
    """A broker that records a chord member and, with the last one, publishes the callback
    in one atomic step, so that no crash between the two can lose the callback."""

    def counts_chords_with(self, store: object) -> bool:
        """Whether it can count the chords of `store` (the same server): else the store does."""
        ...

    async def chord_part_done(self, part: ChordPart) -> bool:
        """Record `part`; True for the one call that published the callback (or failure)."""
        ...


_BROKERS: dict[str, str] = {
    "memory": "taskq.brokers.memory:MemoryBroker",
    "sqlite": "taskq.brokers.sqlite:SQLiteBroker",
    "redis": "taskq.brokers.redis:RedisBroker",
    "rediss": "taskq.brokers.redis:RedisBroker",
    "amqp": "taskq.brokers.amqp:AMQPBroker",
    "amqps": "taskq.brokers.amqp:AMQPBroker",
}


def create_broker(url: str, options: BrokerOptions | None = None) -> Broker:
    cls = load_backend_class(url, _BROKERS, "broker")
    broker: Broker = cls(url, options or BrokerOptions())
    return broker


def dead_letter_queue(queue: str) -> str:
    return queue + DEAD_LETTER_SUFFIX
