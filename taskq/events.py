"""Task events, with Celery's names and fields, through the broker's event primitive
(`Broker.publish_events` / `read_events`: a broadcast on `EVENTS_CHANNEL`; on Redis a stream
and on RabbitMQ a stream queue, each kept for `event_retention` seconds).

A worker run with `worker_send_task_events` (`taskq worker -E`) sends `task-received`,
`task-started`, `task-succeeded`, `task-failed`, `task-retried`, `task-revoked` and
`task-rejected`; a producer with `task_send_sent_event` sends `task-sent`. Every event has
`type`, `uuid` (the task's id), `hostname`, `timestamp` (epoch seconds), `pid` and `clock` (a
counter of its sender's, increasing by one per event), then its type's `FIELDS`.

A payload is a batch: `{"hostname", "pid", "clock", "events": [[type, uuid, timestamp,
*fields], ...]}`, the sender's constant fields once and each event a row of values (its clock
the batch's plus its index), so that sending an event costs a tuple, not a dict; receivers
unpack the rows into Celery's dicts. A worker publishes what it buffered once the loop's turn
is over, at most every `PUBLISH_INTERVAL` (`EventSender`); a producer one per batch of
messages it publishes.

`app.events.receive()` reads them (`taskq events` prints them): live, or on a broker that
keeps them (`KEEPS_EVENTS`) from `since` seconds back.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import traceback
import uuid
from collections.abc import AsyncIterator, Collection, Sequence
from typing import TYPE_CHECKING, Any

import anyio
import orjson

from taskq import states
from taskq.control import GREETING_FIRST_DELAY, GREETING_MAX_DELAY

if TYPE_CHECKING:
    from taskq.app import TaskQ
    from taskq.brokers.base import Broker
    from taskq.execution.job import CallNext, Job, Outcome
    from taskq.message import Message

logger = logging.getLogger("taskq.events")

SENT, RECEIVED, STARTED = "task-sent", "task-received", "task-started"
SUCCEEDED, FAILED, RETRIED = "task-succeeded", "task-failed", "task-retried"
REVOKED, REJECTED = "task-revoked", "task-rejected"
_CALL = ("name", "args", "kwargs", "retries", "eta", "expires", "root_id", "parent_id")
# The fields of each type after the common ones, in the order an event carries them in a batch.
FIELDS: dict[str, tuple[str, ...]] = {
    SENT: (*_CALL[:6], "queue", "exchange", "routing_key", *_CALL[6:]),
    RECEIVED: (*_CALL, "queue", "sent_at"),
    STARTED: (),
    SUCCEEDED: ("result", "runtime"),
    FAILED: ("runtime", "exception", "traceback"),
    RETRIED: ("exception", "traceback"),
    REVOKED: ("terminated", "expired", "signum"),
    REJECTED: ("requeue", "dead_lettered", "reason", "queue"),
}
TASK_EVENTS = tuple(FIELDS)
FLUSH_TIMEOUT = 5.0  # seconds a stopping worker gives its last events
# A worker publishes its buffer at most this often (seconds): a busy one sends one payload
# per interval, not one per loop turn, and an event is at most this late. A publish costs
# the worker a round trip (about 0.1-0.3 ms of CPU on Redis), shared by what it carries: at
# 10 ms a loaded worker's batches were small enough for it to be most of the events' cost.
PUBLISH_INTERVAL = 0.1

REPR_LIMIT = 1024  # characters of an argument's or a result's repr in an event

# An event in a batch: (type, uuid, timestamp, *the type's FIELDS).
Row = tuple[Any, ...]


def saferepr(value: Any) -> str:
    """`repr(value)` cut at `REPR_LIMIT` (args, kwargs and results travel as reprs, as
    Celery's); one that raises is named by its type."""
    try:
        text = repr(value)
    except Exception:
        return f"<unrepresentable {type(value).__name__}>"
    return text if len(text) <= REPR_LIMIT else text[: REPR_LIMIT - 3] + "..."


def encode_batch(hostname: str, pid: int, clock: int, rows: Sequence[Row]) -> bytes:
    """A payload: the sender's `hostname` and `pid` once, and its events as rows, the
    first one's `clock` given (the next ones count on from it)."""
    return orjson.dumps({"hostname": hostname, "pid": pid, "clock": clock, "events": rows})


class EventSender:
    """Sends events from `hostname`: `send` buffers one; the buffer goes out as one batch
    once the event loop's turn is over (`run(broker)`, a worker service, publishes it), at
    most once per `PUBLISH_INTERVAL`."""

    def __init__(self, hostname: str) -> None:
        self._broker: Broker | None = None
        self.hostname = hostname
        self._pid = os.getpid()
        self._clock = 0  # the clock of the last event published
        self._buffer: list[Row] = []
        self._wake = anyio.Event()
        self._scheduled = False

    def send(self, kind: str, task_id: str, *fields: Any) -> None:
        """Buffer an event: `fields` are the values of the type's `FIELDS`, in order."""
        self._buffer.append((kind, task_id, time.time(), *fields))
        if not self._scheduled:  # the first of this turn: wake `run` once the turn is over
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._wake.set)

    async def run(self, broker: Broker) -> None:
        """Publish each turn's events until cancelled, then what is left."""
        self._broker = broker
        try:
            while True:
                await self._wake.wait()
                began = time.monotonic()
                self._wake = anyio.Event()
                self._scheduled = False
                await self._publish()
                await anyio.sleep(max(0.0, PUBLISH_INTERVAL - (time.monotonic() - began)))
        finally:
            with anyio.move_on_after(FLUSH_TIMEOUT, shield=True):
                await self._publish()

    async def _publish(self) -> None:
        batch, self._buffer = self._buffer, []
        if not batch or self._broker is None:
            return
        clock, self._clock = self._clock + 1, self._clock + len(batch)
        try:
            await self._broker.publish_events(encode_batch(self.hostname, self._pid, clock, batch))
        except Exception as exc:  # the broker is down: these events are lost, as Celery's
            logger.warning("Could not send %d task event(s): %s", len(batch), exc)

    # -- what the worker reports -------------------------------------------------------

    def received(self, message: Message, queue: str) -> None:
        """A message taken from `queue` to run."""
        args, kwargs = repr(message.args), repr(message.kwargs)  # plain JSON values: no raise
        self.send(
            RECEIVED,
            message.id,
            message.task,
            args if len(args) <= REPR_LIMIT else saferepr(message.args),
            kwargs if len(kwargs) <= REPR_LIMIT else saferepr(message.kwargs),
            message.retries,
            message.eta,
            message.expires,
            message.root_id,
            message.parent_id,
            queue,
            message.sent_at,
        )

    def revoked(self, task_id: str, *, terminated: bool, expired: bool) -> None:
        self.send(REVOKED, task_id, terminated, expired, None)

    def rejected(self, task_id: str | None, queue: str, reason: str) -> None:
        """A message dead-lettered unrun (malformed, an unknown task, bad arguments)."""
        self.send(REJECTED, task_id or "", False, True, reason, queue)


def sent_events(messages: Sequence[Message]) -> bytes:
    """The `task-sent` events of a batch of published messages, as one payload."""
    now = time.time()
    rows = [
        (
            SENT,
            message.id,
            now,
            message.task,
            saferepr(message.args),
            saferepr(message.kwargs),
            message.retries,
            message.eta,
            message.expires,
            message.queue,
            message.exchange,
            message.routing_key or message.queue,
            message.root_id,
            message.parent_id,
        )
        for message in messages
    ]
    return encode_batch(f"{os.getpid()}@{socket.gethostname()}", os.getpid(), 1, rows)


def _error_fields(error: BaseException | None) -> tuple[str | None, str | None]:
    """An event's `exception` and `traceback`."""
    if error is None:
        return None, None
    return repr(error), "".join(traceback.format_exception(type(error), error, error.__traceback__))


class TaskEvents:
    """The pipeline stage of the task events, first inside the settlement: `task-started` as
    the run begins (where the STARTED state is written), then the run's outcome, before a
    retry is published (so that its `task-retried` comes before the retry's
    `task-received`). `task-revoked` is sent where REVOKED is settled
    (`Runtime.report_revoked`), `task-received` and `task-rejected` by the intake."""

    def __init__(self, sender: EventSender) -> None:
        self.sender = sender

    def applies_to(self, task: Any) -> bool:
        return True

    async def handle(self, job: Job, call_next: CallNext) -> Outcome:
        send, task_id = self.sender.send, job.message.id
        send(STARTED, task_id)
        outcome = await call_next(job)
        status = outcome.status
        if status == states.SUCCESS:
            send(SUCCEEDED, task_id, saferepr(outcome.value), outcome.elapsed)
        elif status == states.FAILURE:
            send(FAILED, task_id, outcome.elapsed, *_error_fields(outcome.error))
        elif status == states.RETRY:
            send(RETRIED, task_id, *_error_fields(outcome.error))
        return outcome


class Events:
    """`app.events`: reading the task events."""

    def __init__(self, app: TaskQ) -> None:
        self._app = app

    async def receive(
        self,
        types: Collection[str] | None = None,
        *,
        task_id: str | None = None,
        ready: anyio.Event | None = None,
        since: float | None = None,
    ) -> AsyncIterator[dict[str, Any]]:
        """The task events sent from about now on, in the order each sender sent them (only
        `types`, or those of `task_id`, if given), until the caller stops iterating.

        `ready` is set once the subscription is in place (a greeting of its own was heard
        back): every event sent after that is received. `since` (seconds) starts that far
        back on a broker that keeps events (Redis: the last `event_retention` seconds);
        elsewhere events are live only."""
        wanted = None if types is None else frozenset(types)
        unknown = sorted((wanted or set()) - set(TASK_EVENTS))
        if unknown:
            raise ValueError(f"unknown event type(s) {unknown}: the types are {list(TASK_EVENTS)}")
        broker = await self._app.connected_broker()
        subscription = broker.read_events(since)
        greeting = orjson.dumps({"listening": uuid.uuid4().hex})  # an object: not a batch
        early: list[bytes] = []  # what came before the greeting
        try:
            heard = anyio.Event()
            async with anyio.create_task_group() as greeter:
                greeter.start_soon(_greet_until_heard, broker, greeting, heard)
                async for payload in subscription:
                    if payload == greeting:
                        heard.set()
                        break
                    early.append(payload)
            if ready is not None:
                ready.set()
            for payload in early:
                for event in _events(payload, wanted, task_id):
                    yield event
            early.clear()
            async for payload in subscription:
                for event in _events(payload, wanted, task_id):
                    yield event
        finally:
            with anyio.CancelScope(shield=True):
                await subscription.aclose()


async def _greet_until_heard(broker: Broker, greeting: bytes, heard: anyio.Event) -> None:
    """`taskq.control.greet_until_heard` on the events' own primitive."""
    delay = GREETING_FIRST_DELAY
    while not heard.is_set():
        try:
            await broker.publish_events(greeting)
        except Exception as exc:  # the broker is down: the reader's own loop retries
            logger.warning("Could not greet the task events: %s", exc)
        with anyio.move_on_after(delay):
            await heard.wait()
        delay = min(delay * 2, GREETING_MAX_DELAY)


def _events(
    payload: bytes, wanted: frozenset[str] | None, task_id: str | None
) -> list[dict[str, Any]]:
    """The events of a batch that are asked for, in Celery's shape; none from a payload that
    is not a batch (a receiver's greeting)."""
    try:
        batch = orjson.loads(payload)
    except orjson.JSONDecodeError:
        logger.warning("Ignored a malformed event payload: %r", payload[:200])
        return []
    if not isinstance(batch, dict) or "events" not in batch:
        return []  # a receiver's greeting
    hostname, pid, clock, rows = (batch.get(key) for key in ("hostname", "pid", "clock", "events"))
    if not isinstance(clock, int) or not isinstance(rows, list):
        logger.warning("Ignored a malformed event payload: %r", payload[:200])
        return []
    events, malformed = [], 0
    for index, row in enumerate(rows):
        kind = row[0] if isinstance(row, list) and len(row) >= 3 else None
        names = FIELDS.get(kind) if isinstance(kind, str) else None
        if names is None or len(row) < 3 + len(names):
            malformed += 1
        elif (wanted is None or kind in wanted) and (task_id is None or row[1] == task_id):
            event = {"type": kind, "uuid": row[1], "hostname": hostname, "timestamp": row[2]}
            event["pid"], event["clock"] = pid, clock + index
            event.update(zip(names, row[3:], strict=False))  # a newer sender's extras: left out
            events.append(event)
    if malformed:
        logger.warning("Ignored %d malformed or unknown event(s) from %s", malformed, hostname)
    return events
