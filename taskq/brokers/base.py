"""What every broker is: the base classes of brokers and of what their consumers receive, the
options they all read, and the URL -> broker factory.

A broker moves encoded envelopes between producers and workers with at-least-once
delivery: a consumed message is held by its consumer until it is acked, nacked or
dead-lettered; a lease that is not renewed (the worker died) expires and the message is
delivered again. `Broker` writes what all of them share once (publishing one message as a
batch of one, checking what `consume` is asked, reading the common options); a broker
implements the primitives. `Delivery` settles once and then frees its consumer's prefetch
slot; a broker's delivery implements the four settlements.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar, Protocol

from taskq import defaults
from taskq.config import Settings, checked_options
from taskq.defaults import POLLING_INTERVAL, VISIBILITY_TIMEOUT
from taskq.errors import ConfigurationError
from taskq.message import Message, encode
from taskq.signing import Signing
from taskq.urls import load_backend_class

DEAD_LETTER_SUFFIX = ".dlq"
EVENTS_CHANNEL = "taskq.events"  # the broadcast channel of task events (taskq.events)
REJECTED = "rejected"  # the reason of a dead letter nacked without requeue
COMMON_OPTIONS = frozenset({"visibility_timeout", "polling_interval"})

logger = logging.getLogger("taskq.brokers")


@dataclass(frozen=True, slots=True)
class BrokerOptions:
    """What every broker reads: `visibility_timeout` and `polling_interval` of
    `broker_transport_options`, `task_max_message_bytes`, and how envelopes are signed
    (`message_signing_key`)."""

    visibility_timeout: float = defaults.VISIBILITY_TIMEOUT
    polling_interval: float = defaults.POLLING_INTERVAL
    max_message_bytes: int = defaults.MAX_MESSAGE_BYTES
    signing: Signing | None = None

    def encode(self, message: Message) -> bytes:
        """The envelope as this broker sends it: bounded in size, signed."""
        return encode(message, self.max_message_bytes, self.signing)


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


@dataclass(frozen=True, slots=True)
class Scheduled:
    """A message the broker holds until it is due (an eta or countdown, a retry's delay)."""

    body: bytes
    due_at: float  # epoch seconds


class Delivery(ABC):
    """One consumed message, held by its consumer until it is settled.

    `body` is the raw envelope: the worker decodes it (and can dead-letter the bytes as they
    came when they do not decode). It is settled once: settling it again is a no-op, and
    settling one whose lease was lost does not touch the new holder's lease. A settlement
    that cannot reach the broker (a link error of the broker's, `LOST`) is logged: the message
    comes back (its lease runs out, its channel closed), the at-least-once answer anyway.
    """

    __slots__ = ("_settled", "body", "delivery_count", "queue")
    LOST: ClassVar[tuple[type[Exception], ...]] = ()

    def __init__(self, body: bytes, queue: str, delivery_count: int) -> None:
        self.body = body
        self.queue = queue
        self.delivery_count = delivery_count
        self._settled = False

    @property
    def settled(self) -> bool:
        """Whether it was acked, nacked or dead-lettered (or that was tried) already."""
        return self._settled

    async def ack(self) -> None:
        await self._settle(self._ack)

    async def ack_before_run(self) -> None:
        """Ack a message whose task is about to run (not `acks_late`). A broker may return
        once the ack is written to its connection, its reply still to come; by default, once
        the ack is done."""
        await self.ack()

    async def nack(self, requeue: bool = True, delay: float | None = None) -> None:
        """Give the message back (after `delay` seconds), or dead-letter it when not `requeue`."""
        if requeue:
            await self._settle(partial(self._requeue, delay))
        else:
            await self.dead_letter(REJECTED)

    async def dead_letter(self, reason: str) -> None:
        await self._settle(partial(self._bury, reason))

    async def extend(self, seconds: float) -> None:
        """Renew the lease so the message stays ours for `seconds` more."""
        if not self._settled:
            await self._extend(seconds)

    def hand_over(self) -> None:
        """Free its place in the consumer's prefetch before it is settled: its task has ended
        and only its ack is to come (an `acks_late` ack waiting for its state, off the slot;
        the state writer's backlog bounds how many). Settling it later frees no other place.
        A broker whose prefetch the server keeps (RabbitMQ) frees nothing."""
        return None

    def settle_elsewhere(self) -> bool:
        """Mark it settled by its consumer, which settles it in a batch of its own (given back
        on stopping, or acked early on Redis); False if it was settled already."""
        if self._settled:
            return False
        self._settled = True
        return True

    async def _settle(self, operation: Any) -> None:
        if self._settled:
            return
        self._settled = True
        try:
            await operation()
        except self.LOST as exc:
            logger.warning("Lost the settlement of a message from %r (%r)", self.queue, exc)
        finally:
            await self._released()

    @abstractmethod
    async def _ack(self) -> None: ...

    @abstractmethod
    async def _requeue(self, delay: float | None) -> None: ...

    @abstractmethod
    async def _bury(self, reason: str) -> None: ...

    @abstractmethod
    async def _extend(self, seconds: float) -> None: ...

    @abstractmethod
    async def _released(self) -> None:
        """It was settled: its consumer may take another message."""


class Broadcasts(Protocol):
    """A subscription to a broadcast channel; `aclose()` ends it."""

    def __aiter__(self) -> AsyncIterator[bytes]: ...

    async def __anext__(self) -> bytes: ...

    async def aclose(self) -> None: ...


class Broker(ABC):
    """A broker on `url`, configured by the app's settings.

    `OPTIONS` names the `broker_transport_options` of its own, besides the common ones
    (`BrokerOptions`); any other name there is a `ConfigurationError`. A subclass reads its
    own from `self.transport`.
    """

    OPTIONS: ClassVar[frozenset[str]] = frozenset()
    # What the broker makes of a queue's options in `task_queues`. Every queue of the brokers
    # but RabbitMQ's has priorities 0-9, so max_priority holds there as it is.
    QUEUE_OPTIONS: ClassVar[frozenset[str]] = frozenset({"max_priority"})

    def __init__(self, url: str, conf: Settings) -> None:
        transport = checked_options(
            conf.broker_transport_options, COMMON_OPTIONS | self.OPTIONS, "broker_transport_options"
        )
        for queue, queue_options in conf.task_queues.items():
            for name in sorted(set(queue_options) - self.QUEUE_OPTIONS):
                raise ConfigurationError(
                    f"task_queues[{queue!r}]: {name!r} is an option of RabbitMQ's queues;"
                    f" the {url.partition(':')[0]} broker has none"
                )
        self.url = url
        self.options = BrokerOptions(
            visibility_timeout=_seconds(transport, "visibility_timeout", VISIBILITY_TIMEOUT),
            polling_interval=_seconds(transport, "polling_interval", POLLING_INTERVAL),
            max_message_bytes=conf.task_max_message_bytes,
            signing=conf.signing(),
        )
        self.transport = {k: v for k, v in transport.items() if k not in COMMON_OPTIONS}

    @property
    def spreads_queues(self) -> bool:
        """Whether its queues live on nodes that may be lost one at a time (Redis Cluster),
        so that the settlements of one queue may stall while another's go on."""
        return False

    @abstractmethod
    async def connect(self) -> None: ...

    @abstractmethod
    async def close(self) -> None: ...

    async def publish(self, message: Message, queue: str) -> None:
        """Enqueue one message; honours `message.eta` and `message.priority`."""
        await self.publish_many([(message, queue)])

    @abstractmethod
    async def publish_many(self, items: Sequence[tuple[Message, str]]) -> None:
        """Enqueue messages in one batch (one round trip where the broker allows); a message
        over `max_message_bytes` enqueues none of them."""

    def consume(self, queues: Sequence[str], prefetch: int) -> AsyncGenerator[Delivery, None]:
        """Deliveries from `queues`, never more than `prefetch` unsettled at once."""
        if isinstance(queues, str):
            raise TypeError("queues must be a sequence of queue names, not a string")
        names = list(dict.fromkeys(queues))
        if not names:
            raise ValueError("consume needs at least one queue")
        if prefetch < 1:
            raise ValueError("prefetch must be at least 1")
        return self._consume(names, prefetch)

    @abstractmethod
    def _consume(self, queues: list[str], prefetch: int) -> AsyncGenerator[Delivery, None]: ...

    @abstractmethod
    async def queue_length(self, queue: str) -> int:
        """Messages waiting or leased in `queue`, delayed ones included."""

    @abstractmethod
    async def scheduled(self, queue: str, limit: int = 100) -> list[Scheduled]:
        """The `limit` messages of `queue` due soonest that are not due yet."""

    @abstractmethod
    async def scheduled_length(self, queue: str) -> int:
        """How many messages of `queue` are not due yet."""

    @abstractmethod
    async def purge(self, queue: str) -> int:
        """Delete the messages waiting in `queue`; returns how many."""

    @abstractmethod
    async def dead_letters(self, queue: str, limit: int = 100) -> list[DeadLetter]:
        """The oldest `limit` dead letters of `queue`."""

    @abstractmethod
    async def dead_letter_length(self, queue: str) -> int: ...

    @abstractmethod
    async def add_dead_letter(self, queue: str, body: bytes, reason: str) -> None:
        """Keep `body` as a dead letter of `queue` (for a message already acked)."""

    @abstractmethod
    async def remove_dead_letters(self, queue: str, ids: Sequence[str]) -> int:
        """Delete these dead letters of `queue`; returns how many were there."""

    @abstractmethod
    async def purge_dead_letters(self, queue: str) -> int: ...

    @abstractmethod
    async def broadcast(self, channel: str, payload: bytes) -> None: ...

    @abstractmethod
    def subscribe(self, channel: str) -> Broadcasts:
        """The payloads broadcast on `channel` from about now on (a subscription may take
        its first read to be in place: see `taskq.control.greet_until_heard`)."""

    # Task events: a broadcast on `EVENTS_CHANNEL`, live only, unless a broker keeps them.
    KEEPS_EVENTS: ClassVar[bool] = False

    async def publish_events(self, payload: bytes) -> None:
        """Send a batch of task events."""
        await self.broadcast(EVENTS_CHANNEL, payload)

    def read_events(self, since: float | None) -> Broadcasts:
        """The batches of task events from now on; a broker that `KEEPS_EVENTS` starts
        `since` seconds back (within what it keeps)."""
        return self.subscribe(EVENTS_CHANNEL)


def _seconds(transport: dict[str, Any], name: str, default: float) -> float:
    try:
        value = float(transport.get(name, default))
    except (TypeError, ValueError):
        raise ConfigurationError(
            f"broker_transport_options[{name!r}] must be a number of seconds"
        ) from None
    if value <= 0:
        raise ConfigurationError(f"broker_transport_options[{name!r}] must be positive")
    return value


_BROKERS: dict[str, str] = {
    "memory": "taskq.brokers.memory:MemoryBroker",
    "sqlite": "taskq.brokers.sqlite:SQLiteBroker",
    "redis": "taskq.brokers.redis:RedisBroker",
    "rediss": "taskq.brokers.redis:RedisBroker",
    "amqp": "taskq.brokers.amqp:AMQPBroker",
    "amqps": "taskq.brokers.amqp:AMQPBroker",
}


def create_broker(url: str, conf: Settings | None = None) -> Broker:
    cls = load_backend_class(url, _BROKERS, "broker")
    broker: Broker = cls(url, conf or Settings())
    return broker


def dead_letter_queue(queue: str) -> str:
    return queue + DEAD_LETTER_SUFFIX
