"""The control plane's client: `app.control` (revoke, broadcast, the control commands) and
`app.control.inspect()`, carried by the broker's broadcasts.

A command goes out on `CONTROL_CHANNEL` to every worker, which applies it if it is one of
the command's `destination` (None: every worker) and answers on `REPLY_CHANNEL` with the
request's id. Each answer also carries what its worker knows of every worker from their
heartbeats (`taskq.worker.presence`), so the client knows whom to wait for: replies are
collected until every known live worker (of the destination) answered, or the timeout, and
the known ones that did not answer are named in `Replies.missing`.
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
from base64 import b64encode
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypedDict, TypeVar, Unpack

import anyio
import orjson

from taskq import defaults
from taskq.brokers.base import Broker
from taskq.message import Message
from taskq.options import parse_rate
from taskq.suggest import did_you_mean

if TYPE_CHECKING:
    from taskq.app import TaskQ

CONTROL_CHANNEL = "taskq.control"
REPLY_CHANNEL = "taskq.control.replies"
BROADCAST_TASK = "broadcast-task"  # not a command: run by every worker of the queue
DEFAULT_TIMEOUT = 1.0
GREETING_FIRST_DELAY = 0.05
GREETING_MAX_DELAY = 5.0

logger = logging.getLogger("taskq.control")

F = TypeVar("F", bound=Callable[..., Any])
Destination = str | Sequence[str] | None


class CommandOptions(TypedDict, total=False):
    """Whom a command is for and how its replies are awaited: see `Control.broadcast`."""

    destination: Destination
    reply: bool
    timeout: float


@dataclass(frozen=True, slots=True)
class WorkerPresence:
    """What heartbeats tell of a worker: its queues, how many tasks it runs, when it last
    beat (epoch seconds), and whether it is online (it did not say goodbye, nor miss
    `MISSED_BEATS` heartbeats)."""

    queues: list[str]
    active: int
    last_heartbeat: float
    online: bool

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> WorkerPresence:
        return cls(
            list(data["queues"]),
            int(data["active"]),
            float(data["last_heartbeat"]),
            bool(data["online"]),
        )


@dataclass(slots=True)
class Replies:
    """What the workers answered: `answers` by worker, `errors` (a command a worker could not
    apply, with why), `missing` (known live workers of the destination that did not answer
    in time) and `workers` (every worker the answering ones know of, by heartbeat)."""

    answers: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    workers: dict[str, WorkerPresence] = field(default_factory=dict)

    @property
    def answered(self) -> set[str]:
        return set(self.answers) | set(self.errors)

    def add(self, reply: dict[str, Any]) -> None:
        """Take in one worker's reply (`reply_to`, `worker`, `result` or `error`, `peers`)."""
        worker, peers = reply.get("worker"), reply.get("peers")
        try:
            if not isinstance(worker, str) or not isinstance(peers, dict):
                raise TypeError("no worker name or peers")
            presences = {str(name): WorkerPresence.from_wire(data) for name, data in peers.items()}
        except (KeyError, TypeError, ValueError) as exc:
            logger.warning("Ignored a malformed control reply (%s): %r", exc, reply)
            return
        if "error" in reply:
            self.errors[worker] = str(reply["error"])
        else:
            self.answers[worker] = reply.get("result")
        for name, presence in presences.items():
            known = self.workers.get(name)
            if known is None or known.last_heartbeat < presence.last_heartbeat:
                self.workers[name] = presence

    def awaited(self, destination: list[str] | None) -> set[str]:
        """The workers to wait for: the destination, else every known live worker."""
        if destination is not None:
            return set(destination)
        return {name for name, presence in self.workers.items() if presence.online}

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class Control:
    """Commands to the app's workers, all of them or the ones named in `destination`.

    Each returns the `Replies` when `reply` (the default but for `revoke`), else None once
    the command is sent.
    """

    def __init__(self, app: TaskQ) -> None:
        self.app = app
        self.commands: dict[str, Callable[..., Any]] = {}

    def command(self, fn: F | None = None, *, name: str | None = None) -> Any:
        """Register a control command of your own (Celery's `@control_command`): workers run
        `fn(worker, **arguments)` (a coroutine function or a plain one) for
        `broadcast(name, arguments)`, and reply with what it returns (JSON)."""

        def register(fn: F) -> F:
            command = name or fn.__name__
            if command in BUILTIN_COMMANDS:
                raise ValueError(f"{command!r} is a built-in control command")
            self.commands[command] = fn
            return fn

        return register(fn) if fn is not None else register

    def inspect(self, destination: Destination = None, timeout: float = DEFAULT_TIMEOUT) -> Inspect:
        return Inspect(self, destination, timeout)

    async def broadcast(
        self,
        command: str,
        arguments: dict[str, Any] | None = None,
        *,
        destination: Destination = None,
        reply: bool = True,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> Replies | None:
        """Send `command` to the workers; with `reply`, collect their answers (module doc)."""
        names = destinations(destination)
        if timeout <= 0:
            raise ValueError(f"timeout must be positive seconds, not {timeout!r}")
        broker = await self.app.connected_broker()
        request = {"op": command, "arguments": arguments or {}, "destination": names}
        if not reply:
            await broker.broadcast(CONTROL_CHANNEL, orjson.dumps(request))
            return None
        request["reply_to"] = secrets.token_hex(8)
        return await _collect(broker, request, names, timeout)

    async def ping(
        self, destination: Destination = None, timeout: float = DEFAULT_TIMEOUT
    ) -> Replies:
        return await self.inspect(destination, timeout).ping()

    async def revoke(
        self,
        task_ids: str | Sequence[str],
        terminate: bool = False,
        **options: Unpack[CommandOptions],
    ) -> Replies | None:
        """Never run these tasks. The revocation is kept in the result store (for
        `result_expires`), so workers started later honour it too, and broadcast to the
        running workers; `terminate=True` also cancels them where they run now. Replies
        only when asked (`reply=True`): the store has it anyway."""
        ids = [task_ids] if isinstance(task_ids, str) else list(task_ids)
        store = await self.app.connected_store()
        await store.revoke(ids, self.revoke_ttl)
        arguments = {"ids": ids, "terminate": terminate}
        wanted: CommandOptions = {"reply": False, **options}
        return await self.broadcast("revoke", arguments, **wanted)

    async def rate_limit(
        self, task_name: str, rate_limit: str | None, **options: Unpack[CommandOptions]
    ) -> Replies | None:
        """Change the task's rate limit ("10/s", "100/m", "1000/h"; None: none) on the workers,
        until they restart."""
        if rate_limit is not None:
            parse_rate(rate_limit)
        arguments = {"task_name": task_name, "rate_limit": rate_limit}
        return await self.broadcast("rate_limit", arguments, **options)

    async def time_limit(
        self,
        task_name: str,
        soft: float | None = None,
        hard: float | None = None,
        **options: Unpack[CommandOptions],
    ) -> Replies | None:
        """Change the task's soft and hard time limits (seconds; None: none) on the workers."""
        arguments = {"task_name": task_name, "soft": soft, "hard": hard}
        return await self.broadcast("time_limit", arguments, **options)

    async def shutdown(self, **options: Unpack[CommandOptions]) -> Replies | None:
        """A warm shutdown of the workers, as on SIGTERM."""
        return await self.broadcast("shutdown", **options)

    async def pool_grow(self, n: int = 1, **options: Unpack[CommandOptions]) -> Replies | None:
        """Raise the workers' concurrency by `n` (within the prefetch they started with)."""
        return await self.broadcast("pool_grow", {"n": n}, **options)

    async def pool_shrink(self, n: int = 1, **options: Unpack[CommandOptions]) -> Replies | None:
        """Lower the workers' concurrency by `n` (running tasks finish first)."""
        return await self.broadcast("pool_shrink", {"n": n}, **options)

    async def add_consumer(self, queue: str, **options: Unpack[CommandOptions]) -> Replies | None:
        """Have the workers consume `queue` too, until they restart."""
        return await self.broadcast("add_consumer", {"queue": queue}, **options)

    async def cancel_consumer(
        self, queue: str, **options: Unpack[CommandOptions]
    ) -> Replies | None:
        """Have the workers stop consuming `queue` (what they prefetched from it still runs)."""
        return await self.broadcast("cancel_consumer", {"queue": queue}, **options)

    async def broadcast_task(self, message: Message) -> None:
        """Run `message` once on every live worker consuming its queue (`broadcast=True`):
        sent on the control channel, so a worker that is not running now never runs it."""
        refused = [
            what
            for what, given in [
                ("an eta or countdown", message.eta),
                ("an idempotency_key", message.headers.get("idempotency_key")),
                ("link or link_error", message.callbacks or message.errbacks),
            ]
            if given
        ]
        if refused:
            raise ValueError(f"a broadcast task runs now, on every worker: no {', '.join(refused)}")
        broker = await self.app.connected_broker()
        body = broker.options.encode(message)
        await self.app.middleware.before_publish(message)
        request = {"op": BROADCAST_TASK, "queue": message.queue, "body": b64encode(body).decode()}
        await broker.broadcast(CONTROL_CHANNEL, orjson.dumps(request))
        await self.app.middleware.after_publish(message)

    @property
    def revoke_ttl(self) -> float:
        return self.app.conf.result_expires or defaults.RESULT_EXPIRES


class Inspect:
    """`app.control.inspect(destination, timeout)`: ask the workers what they hold and do.
    Each method returns the `Replies`, by worker."""

    def __init__(self, control: Control, destination: Destination, timeout: float) -> None:
        self.control = control
        self.destination = destination
        self.timeout = timeout

    async def ask(self, command: str) -> Replies:
        if command not in INSPECT_COMMANDS:
            known = ", ".join(INSPECT_COMMANDS)
            hint = did_you_mean(command, INSPECT_COMMANDS)
            raise ValueError(f"unknown inspect command {command!r}{hint}: one of {known}")
        replies = await self.control.broadcast(
            command, destination=self.destination, timeout=self.timeout
        )
        assert replies is not None
        return replies

    async def ping(self) -> Replies:
        """'pong' from every worker that answers."""
        return await self.ask("ping")

    async def stats(self) -> Replies:
        """pid, uptime, processed and failed counts, concurrency, prefetch, broker, loop, RSS."""
        return await self.ask("stats")

    async def active(self) -> Replies:
        """The running tasks: id, name, args, kwargs, started_at, worker."""
        return await self.ask("active")

    async def registered(self) -> Replies:
        """The task names the worker knows, with their options."""
        return await self.ask("registered")

    async def reserved(self) -> Replies:
        """The messages a worker prefetched and has not started: id, name, args, queue."""
        return await self.ask("reserved")

    async def scheduled(self) -> Replies:
        """The messages of a worker's queues the broker holds until they are due: id, name,
        args, queue, due_at (not on RabbitMQ, which cannot list them: an error says so)."""
        return await self.ask("scheduled")

    async def active_queues(self) -> Replies:
        """The queues a worker consumes, with their options of `task_queues`."""
        return await self.ask("active_queues")

    async def revoked(self) -> Replies:
        """The task ids a worker holds revoked."""
        return await self.ask("revoked")

    async def conf(self) -> Replies:
        """A worker's settings (passwords in URLs masked)."""
        return await self.ask("conf")


INSPECT_COMMANDS = (
    "ping",
    "stats",
    "active",
    "reserved",
    "scheduled",
    "registered",
    "active_queues",
    "revoked",
    "conf",
)
CONTROL_COMMANDS = (
    "rate_limit",
    "time_limit",
    "shutdown",
    "pool_grow",
    "pool_shrink",
    "add_consumer",
    "cancel_consumer",
    "revoke",
)
BUILTIN_COMMANDS = frozenset({*INSPECT_COMMANDS, *CONTROL_COMMANDS})


def destinations(destination: Destination) -> list[str] | None:
    """The worker names of `destination`, checked: None means every worker."""
    if destination is None:
        return None
    names = [destination] if isinstance(destination, str) else list(destination)
    if not names or not all(isinstance(name, str) and name for name in names):
        raise ValueError(f"destination must name workers, not {destination!r}")
    return names


async def _collect(
    broker: Broker, request: dict[str, Any], destination: list[str] | None, timeout: float
) -> Replies:
    """Listen for replies, then send the request; collect until `timeout` or until every
    awaited worker (`Replies.awaited`) answered."""
    replies = Replies()
    greeting = orjson.dumps({"hello": request["reply_to"]})
    heard = anyio.Event()
    subscription = broker.subscribe(REPLY_CHANNEL)
    try:
        with anyio.move_on_after(timeout):
            async with anyio.create_task_group() as greeter:
                greeter.start_soon(greet_until_heard, broker, REPLY_CHANNEL, greeting, heard)
                async for payload in subscription:
                    if payload == greeting:
                        if not heard.is_set():
                            heard.set()
                            await broker.broadcast(CONTROL_CHANNEL, orjson.dumps(request))
                        continue
                    reply = decode_payload(payload)
                    if reply is None or reply.get("reply_to") != request["reply_to"]:
                        continue
                    replies.add(reply)
                    if replies.answered >= replies.awaited(destination):
                        break
                greeter.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True):
            await subscription.aclose()
    replies.missing = sorted(replies.awaited(destination) - replies.answered)
    return replies


async def greet_until_heard(
    broker: Broker, channel: str, greeting: bytes, heard: anyio.Event
) -> None:
    """Broadcast `greeting` until it is heard: until then, a subscription may not be in
    place yet (Redis and RabbitMQ subscribe on the first read)."""
    delay = GREETING_FIRST_DELAY
    while not heard.is_set():
        try:
            await broker.broadcast(channel, greeting)
        except Exception as exc:  # the broker is down: the caller's timeout bounds this
            logger.warning("Could not broadcast on %s: %s", channel, exc)
        with anyio.move_on_after(delay):
            await heard.wait()
        delay = min(delay * 2, GREETING_MAX_DELAY)


def decode_payload(payload: bytes) -> dict[str, Any] | None:
    """A JSON object sent on a control channel, or None for a payload that is not one."""
    try:
        data = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    return data if isinstance(data, dict) else None
