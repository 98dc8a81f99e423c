"""What the AMQP broker declares on RabbitMQ, and under which names and arguments.

For every task queue `q` (durable, declared on first use):

    exchange  <default>                 direct (task_default_exchange, "taskq"): q is bound
                                        to it with the routing key `q`
    exchange  <default>.dlx             direct: the dead-letter exchange of every queue
    queue     q                         classic, or quorum with x-delivery-limit; x-max-priority
                                        when it asks for priorities; dead-letters into
                                        <default>.dlx with the routing key `q`
    queue     q.dlq                     bound to <default>.dlx with the key `q`
    queues    q.delay.<ms>              the delay buckets: x-message-ttl of 2**k ms (k = 0..31),
                                        dead-lettering back into `q` through the default
                                        exchange. A delayed message waits in the largest bucket
                                        not longer than its remaining delay and comes back to
                                        `q`; its consumer parks it again until it is due.
                                        When `q` is a quorum queue, so are `q.dlq` and its
                                        buckets (dead-lettering at-least-once), so that all of
                                        them survive the loss of any one node of a cluster.
    exchange  <default>.broadcast.<channel>   fanout, for the control plane

Exchanges named by `task_routes` are topic exchanges unless `exchange_types` says otherwise;
`bindings` binds queues to them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aio_pika.abc import AbstractChannel, AbstractQueue, ExchangeType
from aiormq.exceptions import ChannelPreconditionFailed

from taskq.brokers.base import dead_letter_queue
from taskq.config import Settings
from taskq.errors import ConfigurationError

DEFAULT_EXCHANGE = "taskq"
DEFAULT_DELIVERY_LIMIT = 20
DEFAULT_PUBLISH_TIMEOUT = 10.0
DEFAULT_RECONNECT_INTERVAL = 1.0
# Bucket k holds a message for 2**k ms: 1 ms up to 2**31 ms (24.8 days); a longer delay
# goes through the largest bucket as often as it takes.
DELAY_BUCKETS = 32
QUORUM = "quorum"
# The broker_transport_options the AMQP broker reads (see the README's RabbitMQ section).
OPTIONS = frozenset(
    {"queue_max_priority", "quorum_queues", "delivery_limit", "queue_arguments", "bindings"}
    | {"exchange_types", "publish_timeout", "reconnect_interval"}
)


@dataclass(frozen=True, slots=True)
class Binding:
    exchange: str
    routing_key: str


@dataclass(frozen=True, slots=True)
class AMQPConfig:
    """The AMQP broker's transport options, checked once (see the README's RabbitMQ section)."""

    default_exchange: str = DEFAULT_EXCHANGE
    max_priority: int | None = None
    queue_max_priority: dict[str, int] = field(default_factory=dict)
    quorum_queues: frozenset[str] = frozenset()
    delivery_limit: int = DEFAULT_DELIVERY_LIMIT
    queue_arguments: dict[str, dict[str, Any]] = field(default_factory=dict)
    bindings: dict[str, tuple[Binding, ...]] = field(default_factory=dict)
    exchange_types: dict[str, str] = field(default_factory=dict)
    publish_timeout: float = DEFAULT_PUBLISH_TIMEOUT
    reconnect_interval: float = DEFAULT_RECONNECT_INTERVAL

    @classmethod
    def from_settings(cls, transport: Mapping[str, Any], conf: Settings) -> AMQPConfig:
        """From the broker's own transport options, `task_default_exchange`,
        `task_queue_max_priority` and the queues' options in `task_queues` (the transport
        options win where both name one)."""
        transport = _with_declared_queues(transport, conf)
        try:
            config = cls(
                default_exchange=conf.task_default_exchange or DEFAULT_EXCHANGE,
                max_priority=_priority(conf.task_queue_max_priority, "task_queue_max_priority"),
                queue_max_priority={
                    str(q): _priority(n, f"queue_max_priority[{q!r}]") or 0
                    for q, n in dict(transport.get("queue_max_priority") or {}).items()
                },
                quorum_queues=frozenset(map(str, transport.get("quorum_queues") or ())),
                delivery_limit=int(transport.get("delivery_limit", DEFAULT_DELIVERY_LIMIT)),
                queue_arguments={
                    str(q): dict(args)
                    for q, args in dict(transport.get("queue_arguments") or {}).items()
                },
                bindings={
                    str(q): tuple(_binding(b) for b in bs)
                    for q, bs in dict(transport.get("bindings") or {}).items()
                },
                exchange_types={
                    str(name): str(ExchangeType(kind).value)
                    for name, kind in dict(transport.get("exchange_types") or {}).items()
                },
                publish_timeout=float(transport.get("publish_timeout", DEFAULT_PUBLISH_TIMEOUT)),
                reconnect_interval=float(
                    transport.get("reconnect_interval", DEFAULT_RECONNECT_INTERVAL)
                ),
            )
        except (TypeError, ValueError, KeyError) as exc:
            raise ConfigurationError(f"bad AMQP broker_transport_options: {exc!r}") from None
        for queue in config.quorum_queues | set(config.queue_arguments):
            if config.is_quorum(queue) and config.priority_of(queue):
                raise ConfigurationError(
                    f"queue {queue!r}: quorum queues have no priorities (x-max-priority)"
                )
        return config

    @property
    def dead_letter_exchange(self) -> str:
        return f"{self.default_exchange}.dlx"

    def broadcast_exchange(self, channel: str) -> str:
        return f"{self.default_exchange}.broadcast.{channel}"

    def is_quorum(self, queue: str) -> bool:
        declared = self.queue_arguments.get(queue, {}).get("x-queue-type")
        return declared == QUORUM or (declared is None and queue in self.quorum_queues)

    def priority_of(self, queue: str) -> int | None:
        if "x-max-priority" in self.queue_arguments.get(queue, {}):
            return int(self.queue_arguments[queue]["x-max-priority"])
        if queue in self.queue_max_priority:
            return self.queue_max_priority[queue] or None
        return None if self.is_quorum(queue) else self.max_priority

    def queue_arguments_of(self, queue: str) -> dict[str, Any]:
        arguments: dict[str, Any] = {
            "x-dead-letter-exchange": self.dead_letter_exchange,
            "x-dead-letter-routing-key": queue,
        }
        if self.is_quorum(queue):
            arguments["x-queue-type"] = QUORUM
            arguments["x-delivery-limit"] = self.delivery_limit
        priority = self.priority_of(queue)
        if priority:
            arguments["x-max-priority"] = priority
        return arguments | self.queue_arguments.get(queue, {})

    def exchange_type(self, exchange: str) -> ExchangeType:
        if exchange in (self.default_exchange, self.dead_letter_exchange):
            return ExchangeType.DIRECT
        return ExchangeType(self.exchange_types.get(exchange, ExchangeType.TOPIC.value))

    def queues_bound_to(self, exchange: str) -> list[str]:
        return [q for q, bs in self.bindings.items() if any(b.exchange == exchange for b in bs)]


def _with_declared_queues(transport: Mapping[str, Any], conf: Settings) -> dict[str, Any]:
    """The transport options with what `task_queues` says of each queue folded in."""
    merged = dict(transport)
    priorities = dict(merged.get("queue_max_priority") or {})
    quorum = list(merged.get("quorum_queues") or ())
    arguments = {q: dict(a) for q, a in dict(merged.get("queue_arguments") or {}).items()}
    bindings = {q: list(b) for q, b in dict(merged.get("bindings") or {}).items()}
    default_exchange = conf.task_default_exchange or DEFAULT_EXCHANGE
    for queue, options in conf.task_queues.items():
        if "max_priority" in options:
            priorities.setdefault(queue, options["max_priority"])
        if options.get("queue_type") == QUORUM and queue not in quorum:
            quorum.append(queue)
        if "queue_arguments" in options:
            arguments[queue] = {**dict(options["queue_arguments"]), **arguments.get(queue, {})}
        exchange = options.get("exchange", default_exchange)
        routing_key = options.get("routing_key", queue)
        if (exchange, routing_key) != (default_exchange, queue):
            bindings.setdefault(queue, []).append(
                {"exchange": exchange, "routing_key": routing_key}
            )
    merged.update(
        queue_max_priority=priorities,
        quorum_queues=quorum,
        queue_arguments=arguments,
        bindings=bindings,
    )
    return merged


def _binding(spec: Mapping[str, Any]) -> Binding:
    exchange, routing_key = str(spec["exchange"]), str(spec["routing_key"])
    if not exchange:
        raise ValueError("a binding needs an exchange (the nameless default one takes none)")
    return Binding(exchange, routing_key)


def _priority(value: Any, name: str) -> int | None:
    if value is None:
        return None
    if type(value) is not int or not 0 <= value <= 9:
        raise ValueError(f"{name} must be 1-9 (0 or None: no priorities), not {value!r}")
    return value or None


def bucket_ttl(delay: float) -> int:
    """The bucket (its TTL in ms) for a message due in `delay` seconds: the largest one that
    does not hold it past its due time, so it comes back on time or early, never late."""
    milliseconds = max(1, math.ceil(delay * 1000))
    return 1 << min(DELAY_BUCKETS - 1, milliseconds.bit_length() - 1)


def bucket_queue(queue: str, ttl: int) -> str:
    return f"{queue}.delay.{ttl}"


def bucket_ttls() -> list[int]:
    return [1 << k for k in range(DELAY_BUCKETS)]


def bucket_arguments(queue: str, ttl: int) -> dict[str, Any]:
    # Through the default exchange straight into `queue`, whatever exchange the message took.
    return {"x-message-ttl": ttl, "x-dead-letter-exchange": "", "x-dead-letter-routing-key": queue}


async def declare_exchange(
    channel: AbstractChannel, config: AMQPConfig, name: str, kind: ExchangeType | None = None
) -> None:
    kind = kind or config.exchange_type(name)
    try:
        await channel.declare_exchange(name, kind, durable=True)
    except ChannelPreconditionFailed as exc:
        raise _mismatch("exchange", name, f"type {kind.value}", exc) from exc


async def declare_queue(channel: AbstractChannel, config: AMQPConfig, name: str) -> AbstractQueue:
    """Declare task queue `name` with its bindings and its dead-letter queue; return it."""
    for exchange in {config.default_exchange, config.dead_letter_exchange} | {
        b.exchange for b in config.bindings.get(name, ())
    }:
        await declare_exchange(channel, config, exchange)
    queue = await _declare(channel, name, config.queue_arguments_of(name))
    await queue.bind(config.default_exchange, name)
    for binding in config.bindings.get(name, ()):
        await queue.bind(binding.exchange, binding.routing_key)
    dead_arguments = {"x-queue-type": QUORUM} if config.is_quorum(name) else {}
    dead = await _declare(channel, dead_letter_queue(name), dead_arguments)
    await dead.bind(config.dead_letter_exchange, name)
    return queue


async def declare_bucket(
    channel: AbstractChannel, config: AMQPConfig, queue: str, ttl: int
) -> AbstractQueue:
    arguments = bucket_arguments(queue, ttl)
    if config.is_quorum(queue):  # dead-lettered into `queue` only once `queue` has taken it
        arguments |= {
            "x-queue-type": QUORUM,
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
        }
    return await _declare(channel, bucket_queue(queue, ttl), arguments)


async def _declare(channel: AbstractChannel, name: str, arguments: dict[str, Any]) -> AbstractQueue:
    try:
        return await channel.declare_queue(name, durable=True, arguments=arguments)
    except ChannelPreconditionFailed as exc:
        raise _mismatch("queue", name, f"arguments {arguments}", exc) from exc


def _mismatch(kind: str, name: str, wanted: str, exc: Exception) -> ConfigurationError:
    return ConfigurationError(
        f"RabbitMQ {kind} {name!r} exists but not with {wanted}: delete it, or make "
        f"broker_transport_options match it ({exc})"
    )
