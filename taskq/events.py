"""Task events, with Celery's names and fields, through the broker's event primitive
(`Broker.publish_events` / `read_events`: a broadcast on `EVENTS_CHANNEL`; on Redis a stream
kept for `event_retention` seconds).

A worker run with `worker_send_task_events` (`taskq worker -E`) sends `task-received`,
`task-started`, `task-succeeded`, `task-failed`, `task-retried`, `task-revoked` and
`task-rejected`; a producer with `task_send_sent_event` sends `task-sent`. Every event has
`type`, `uuid` (the task's id), `hostname`, `timestamp` (epoch seconds), `pid` and `clock` (a
counter of its sender's, increasing by one per event); `task-received` names the `queue` it
came from (beyond Celery's fields), so a monitor knows it without the producer's `task-sent`.
A payload is a JSON list of events: a worker publishes what it buffered once the loop's turn
is over, at most every `PUBLISH_INTERVAL` (`EventSender`); a producer one per batch of messages
it publishes.

`app.events.receive()` reads them (`taskq events` prints them): live, or on Redis from
`since` seconds back.
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
TASK_EVENTS = (SENT, RECEIVED, STARTED, SUCCEEDED, FAILED, RETRIED, REVOKED, REJECTED)
FLUSH_TIMEOUT = 5.0  # seconds a stopping worker gives its last events
# A worker publishes its buffer at most this often (seconds): a busy one sends one payload
# per interval, not one per loop turn, and an event is at most this late.
PUBLISH_INTERVAL = 0.01

REPR_LIMIT = 1024  # characters of an argument's or a result's repr in an event


def saferepr(value: Any) -> str:
    """`repr(value)` cut at `REPR_LIMIT` (args, kwargs and results travel as reprs, as
    Celery's); one that raises is named by its type."""
    try:
        text = repr(value)
    except Exception:
        return f"<unrepresentable {type(value).__name__}>"
    return text if len(text) <= REPR_LIMIT else text[: REPR_LIMIT - 3] + "..."


class EventSender:
    """Sends events from `hostname`: `send` buffers one; the buffer goes out as one broadcast
    once the event loop's turn is over (`run(broker)`, a worker service, publishes it), at
    most once per `PUBLISH_INTERVAL`."""

    def __init__(self, hostname: str) -> None:
        self._broker: Broker | None = None
        self.hostname = hostname
        self._pid = os.getpid()
        self._clock = 0
        self._buffer: list[dict[str, Any]] = []
        self._wake = anyio.Event()
        self._scheduled = False

    def send(self, kind: str, task_id: str, **fields: Any) -> None:
        self._clock += 1
        fields["type"], fields["uuid"], fields["hostname"] = kind, task_id, self.hostname
        fields["timestamp"], fields["pid"], fields["clock"] = time.time(), self._pid, self._clock
        self._buffer.append(fields)
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
        try:
            await self._broker.publish_events(orjson.dumps(batch))
        except Exception as exc:  # the broker is down: these events are lost, as Celery's
            logger.warning("Could not send %d task event(s): %s", len(batch), exc)

    # -- what the worker reports -------------------------------------------------------

    def received(self, message: Message) -> None:
        args, kwargs = repr(message.args), repr(message.kwargs)  # plain JSON values: no raise
        self.send(
            RECEIVED,
            message.id,
            name=message.task,
            args=args if len(args) <= REPR_LIMIT else saferepr(message.args),
            kwargs=kwargs if len(kwargs) <= REPR_LIMIT else saferepr(message.kwargs),
            retries=message.retries,
            eta=message.eta,
            expires=message.expires,
            root_id=message.root_id,
            parent_id=message.parent_id,
            queue=message.queue,
        )

    def rejected(self, task_id: str | None, queue: str, reason: str) -> None:
        """A message dead-lettered unrun (malformed, an unknown task, bad arguments)."""
        self.send(
            REJECTED, task_id or "", requeue=False, dead_lettered=True, reason=reason, queue=queue
        )


def sent_events(messages: Sequence[Message]) -> bytes:
    """The `task-sent` events of a batch of published messages, as one payload."""
    pid, now, hostname = os.getpid(), time.time(), f"{os.getpid()}@{socket.gethostname()}"
    return orjson.dumps(
        [
            {
                "type": SENT,
                "uuid": message.id,
                "hostname": hostname,
                "timestamp": now,
                "pid": pid,
                "clock": index,
                "name": message.task,
                "args": saferepr(message.args),
                "kwargs": saferepr(message.kwargs),
                "retries": message.retries,
                "eta": message.eta,
                "expires": message.expires,
                "queue": message.queue,
                "exchange": message.exchange,
                "routing_key": message.routing_key or message.queue,
                "root_id": message.root_id,
                "parent_id": message.parent_id,
            }
            for index, message in enumerate(messages, 1)
        ]
    )


def _error_fields(error: BaseException | None) -> dict[str, Any]:
    if error is None:
        return {"exception": None, "traceback": None}
    return {
        "exception": repr(error),
        "traceback": "".join(traceback.format_exception(type(error), error, error.__traceback__)),
    }


class TaskEvents:
    """The pipeline stages of the task events. This one, first inside the settlement:
    `task-started` as the run begins (where the STARTED state is written), then the run's
    outcome, before a retry is published (so that its `task-retried` comes before the
    retry's `task-received`). `revoked`, outermost: `task-revoked` for the guard's outcomes
    and a run terminated."""

    def __init__(self, sender: EventSender) -> None:
        self.sender = sender
        self.revoked = _Revoked(sender)

    def applies_to(self, task: Any) -> bool:
        return True

    async def handle(self, job: Job, call_next: CallNext) -> Outcome:
        send, task_id = self.sender.send, job.message.id
        send(STARTED, task_id)
        outcome = await call_next(job)
        status = outcome.status
        if status == states.SUCCESS:
            send(SUCCEEDED, task_id, result=saferepr(outcome.value), runtime=outcome.elapsed)
        elif status == states.FAILURE:
            send(FAILED, task_id, runtime=outcome.elapsed, **_error_fields(outcome.error))
        elif status == states.RETRY:
            send(RETRIED, task_id, **_error_fields(outcome.error))
        return outcome


class _Revoked:
    def __init__(self, sender: EventSender) -> None:
        self._sender = sender

    def applies_to(self, task: Any) -> bool:
        return True

    async def handle(self, job: Job, call_next: CallNext) -> Outcome:
        try:
            outcome = await call_next(job)
        except anyio.get_cancelled_exc_class():
            if job.terminated:
                self._send(job, terminated=True, expired=False)
            raise
        if outcome.status == states.REVOKED:
            self._send(job, terminated=False, expired=str(outcome.error) == "expired")
        return outcome

    def _send(self, job: Job, *, terminated: bool, expired: bool) -> None:
        self._sender.send(
            REVOKED, job.message.id, terminated=terminated, expired=expired, signum=None
        )


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
    """The events of a payload that are asked for; none from one that is not a batch."""
    try:
        batch = orjson.loads(payload)
    except orjson.JSONDecodeError:
        logger.warning("Ignored a malformed event payload: %r", payload[:200])
        return []
    if not isinstance(batch, list):
        return []  # a receiver's greeting
    return [
        event
        for event in batch
        if isinstance(event, dict)
        and (wanted is None or event.get("type") in wanted)
        and (task_id is None or event.get("uuid") == task_id)
    ]
