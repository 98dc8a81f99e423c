"""Eager runs: `task_always_eager=True` and `Task.apply()` run messages through the same
pipeline as a worker, in this process, with deliveries that live here.

What a run publishes, its retry or the next steps of its workflow, joins the run's own queue
and runs after it, in order, before the call returns: a retry runs at once (its countdown is
not waited for), a chain runs to its end, a chord's callback after its last member. States
are written to the app's result store, so `AsyncResult(id)` and chords work as with a worker.
Eager runs keep no dead letters: one is logged instead. Rate limits do not apply.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from taskq import states
from taskq.brokers.base import Delivery
from taskq.chords import ChordCounter
from taskq.errors import BadArgumentsError
from taskq.execution.job import Job, Outcome, Written
from taskq.execution.pipeline import standard_pipeline
from taskq.message import Message, encode
from taskq.result import EagerResult
from taskq.stores.base import ResultStore, TaskMeta
from taskq.task import Request

if TYPE_CHECKING:
    import anyio

    from taskq.app import TaskQ
    from taskq.execution.processpool import ProcessPool

logger = logging.getLogger("taskq.eager")

HOSTNAME = "eager"


async def run_eagerly(app: TaskQ, messages: Sequence[Message]) -> list[EagerResult[Any]]:
    """Run `messages` and everything they start; the final result of each of them."""
    run = EagerRun(app, await app.connected_store())
    return await run.run(messages)


class EagerDelivery(Delivery):
    """A message handed to an eager run: it is only marked settled, or logged when it would
    have been dead-lettered."""

    __slots__ = ()

    def __init__(self, message: Message) -> None:
        super().__init__(encode(message), message.queue, 1)

    async def _ack(self) -> None:
        return None

    async def _requeue(self, delay: float | None) -> None:
        return None

    async def _bury(self, reason: str) -> None:
        logger.warning("Eager run of a message from %r dead-lettered: %s", self.queue, reason)

    async def _extend(self, seconds: float) -> None:
        return None

    async def _released(self) -> None:
        return None


class _States:
    """Every state written at once (a STARTED one with the state after it)."""

    def __init__(self, store: ResultStore, ttl: float | None) -> None:
        self._store = store
        self._ttl = ttl
        self._queued: dict[str, TaskMeta] = {}

    def put(self, meta: TaskMeta) -> None:
        self._queued[meta.task_id] = meta

    async def write(self, meta: TaskMeta) -> None:
        self.put(meta)
        metas, self._queued = list(self._queued.values()), {}
        await self._store.set_states(metas, self._ttl)

    async def record(self, meta: TaskMeta, *, wait: bool, acked: bool) -> Written | None:
        await self.write(meta)
        return None


class EagerRun:
    """The runtime of one eager call: its queue of messages, run one after another."""

    hostname = HOSTNAME
    threads: anyio.CapacityLimiter | None = None
    processes: ProcessPool | None = None  # eager runs call plain functions in threads
    chord_counter: ChordCounter | None = None  # the store counts: the callback runs here

    def __init__(self, app: TaskQ, store: ResultStore) -> None:
        self.app = app
        self.store = store
        self.states = _States(store, app.conf.result_expires)
        self._queue: deque[Message] = deque()
        self._pipeline = standard_pipeline(self, rate_limits=False)

    async def run(self, messages: Sequence[Message]) -> list[EagerResult[Any]]:
        self._queue.extend(messages)
        final: dict[str, Outcome] = {}
        while self._queue:
            message = self._queue.popleft()
            final[message.id] = await self._run_one(message)
        outcomes = [final[message.id] for message in messages]
        if self.app.conf.task_eager_propagates:
            for outcome in outcomes:
                if outcome.status == states.FAILURE and outcome.error is not None:
                    raise outcome.error
        return [
            EagerResult(_meta_of(outcome, message.id), app=self.app)
            for outcome, message in zip(outcomes, messages, strict=True)
        ]

    async def _run_one(self, message: Message) -> Outcome:
        task = self.app.get_task(message.task)
        try:
            task.bind_arguments(message.args, message.kwargs)
        except TypeError as exc:
            error = BadArgumentsError(f"{message.task}: {exc}")
            meta = TaskMeta.from_exception(message.id, error, task=message.task, worker=HOSTNAME)
            await self.states.write(meta)
            return Outcome(states.FAILURE, error=error, meta=meta)
        exchange = self.app.conf.task_default_exchange
        request = Request(message, HOSTNAME, message.queue, 1, exchange, is_eager=True)
        job = Job(EagerDelivery(message), message, task, request)
        return await self._pipeline.chain(task)(job)

    async def publish(self, message: Message, queue: str) -> None:
        self._queue.append(message)

    async def send_messages(self, messages: Sequence[Message]) -> None:
        self._queue.extend(messages)

    async def add_dead_letter(self, queue: str, body: bytes, reason: str) -> None:
        logger.warning("Eager run of a message from %r dead-lettered: %s", queue, reason)

    def revoked_now(self, task_id: str) -> bool | None:
        return None  # the store knows

    async def is_revoked(self, task_id: str) -> bool:
        return bool(await self.store.revoked([task_id]))

    def report_revoked(self, job: Job, reason: str) -> None:
        """An eager run sends no task events."""

    async def wait_off_slot(self, wait: Callable[[], Awaitable[object]]) -> bool:
        await wait()
        return True

    async def ack_after_run(self, delivery: Delivery, written: Written | None) -> None:
        if written is not None:
            await written.wait()
        await delivery.ack()


def _meta_of(outcome: Outcome, task_id: str) -> TaskMeta:
    """What the run recorded; a middleware that answered without running may have left none."""
    return outcome.meta or TaskMeta(task_id, outcome.status)
