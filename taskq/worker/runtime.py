"""A worker's side of running tasks: its intake (a delivery becomes a job, or a dead letter)
and the services its pipeline runs against (`taskq.execution.job.Runtime`)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

import anyio

from taskq.brokers.base import Broker, Delivery
from taskq.chords import ChordCounter
from taskq.errors import BadArgumentsError, MessageError, NotRegisteredError, TaskQError
from taskq.execution.job import Job, Written
from taskq.execution.pipeline import standard_pipeline
from taskq.message import Message, decode, peek_id
from taskq.stores.base import ResultStore, TaskMeta
from taskq.task import Request
from taskq.worker.batching import Coalescer, RevokedIds
from taskq.worker.statewriter import StateWriter

if TYPE_CHECKING:
    from taskq.app import TaskQ
    from taskq.events import EventSender
    from taskq.execution.pipeline import Stage
    from taskq.execution.processpool import ProcessPool
    from taskq.worker.deferredacks import DeferredAcks
    from taskq.worker.metrics import WorkerMetrics

logger = logging.getLogger("taskq.worker")

UNHANDLED_TIMEOUT = 10.0  # seconds given to dead-lettering a delivery whose handling failed

LendSlot = Callable[[Callable[[], Awaitable[object]]], Awaitable[bool]]


def event_loop_name() -> str:
    """The running event loop's kind: asyncio or uvloop."""
    return type(asyncio.get_running_loop()).__module__.partition(".")[0]


class WorkerRuntime:
    def __init__(
        self,
        app: TaskQ,
        broker: Broker,
        store: ResultStore,
        chord_counter: ChordCounter | None,
        hostname: str,
        threads: anyio.CapacityLimiter,
        *,
        processes: ProcessPool | None = None,
        metrics: WorkerMetrics | None = None,
        outermost: Sequence[Stage] = (),
        settled: Sequence[Stage] = (),
        events: EventSender | None = None,
    ) -> None:
        self.app = app
        self.broker = broker
        self.store = store
        self.hostname = hostname
        self.threads: anyio.CapacityLimiter | None = threads
        self.processes = processes
        self.accept_content = frozenset(app.conf.accept_content)
        self.max_message_bytes = app.conf.task_max_message_bytes
        self.signing = broker.options.signing
        self.states = StateWriter(store, app.conf.result_expires)
        self.revoked = RevokedIds(app.control.revoke_ttl)
        self.chord_counter = chord_counter
        self.pipeline = standard_pipeline(self, outermost=outermost, settled=settled)
        self._metrics = metrics
        self._events = events
        self.lend_slot: LendSlot | None = None  # the worker's: see `wait_off_slot`
        self.deferred_acks: DeferredAcks | None = None  # the worker's: see `ack_after_run`
        self._stored_revocations = Coalescer(self.store.revoked)
        self._revocations_loaded = False
        self._exchange = app.conf.task_default_exchange

    async def receive(self, delivery: Delivery) -> Job | None:
        """The job of a fresh delivery; a bad one is dead-lettered (and its task marked
        FAILURE): a bad signature, a malformed message, an unknown task, arguments that do
        not fit. The signature is checked before anything of the body is parsed."""
        try:
            body = delivery.body if self.signing is None else self.signing.verified(delivery.body)
            message = decode(body, self.accept_content, self.max_message_bytes)
            task = self.app.get_task(message.task)
            task.bind_arguments(message.args, message.kwargs)
        except (MessageError, NotRegisteredError) as exc:
            await self._reject(delivery, exc, None)
            return None
        except TypeError as exc:
            await self._reject(delivery, BadArgumentsError(f"{message.task}: {exc}"), message.task)
            return None
        if self._events is not None:
            self._events.received(message, delivery.queue)
        request = Request(
            message, self.hostname, delivery.queue, delivery.delivery_count, self._exchange
        )
        return Job(delivery, message, task, request)

    async def unhandled(self, delivery: Delivery, error: Exception) -> None:
        """Settle a delivery whose handling failed unexpectedly: into the dead letters with
        the reason (its copy, if it was acked already), not left to come back for ever."""
        reason = f"could not be handled: {type(error).__name__}: {error}"
        try:
            with anyio.fail_after(UNHANDLED_TIMEOUT, shield=True):
                if delivery.settled:
                    await self.broker.add_dead_letter(delivery.queue, delivery.body, reason)
                else:
                    await delivery.dead_letter(reason)
        except Exception:
            logger.exception("Could not dead-letter it either: it comes back when its lease ends")

    async def load_revocations(self) -> None:
        """Take in the store's revocations. Called once broadcasts reach this worker: from
        then on, `revoked` alone is complete (a revocation is stored, then broadcast)."""
        self.revoked.add(await self.store.all_revoked())
        self._revocations_loaded = True

    # -- the Runtime of the pipeline ------------------------------------------------

    def revoked_now(self, task_id: str) -> bool | None:
        """Known here once the stored revocations are loaded, or if it was broadcast."""
        if task_id in self.revoked:
            return True
        return False if self._revocations_loaded else None

    async def is_revoked(self, task_id: str) -> bool:
        known = self.revoked_now(task_id)
        if known is not None:
            return known
        return await self._stored_revocations.contains(task_id)  # batched

    async def publish(self, message: Message, queue: str) -> None:
        await self.broker.publish(message, queue)

    async def send_messages(self, messages: Sequence[Message]) -> None:
        await self.app.publish_messages(messages)

    async def add_dead_letter(self, queue: str, body: bytes, reason: str) -> None:
        await self.broker.add_dead_letter(queue, body, reason)

    def report_revoked(self, job: Job, reason: str) -> None:
        if self._events is not None:
            self._events.revoked(
                job.message.id, terminated=job.terminated, expired=reason == "expired"
            )

    async def wait_off_slot(self, wait: Callable[[], Awaitable[object]]) -> bool:
        assert self.lend_slot is not None
        return await self.lend_slot(wait)

    async def ack_after_run(self, delivery: Delivery, written: Written | None) -> None:
        if written is None and not self.broker.spreads_queues:
            await delivery.ack()
            return
        assert self.deferred_acks is not None
        self.deferred_acks.add(delivery, written)

    async def _reject(self, delivery: Delivery, error: TaskQError, task: str | None) -> None:
        """Dead-letter a message that cannot run (`task`: its name, if it is registered)."""
        reason = f"{type(error).__name__}: {error}"
        logger.error("Dead-lettered a message from %r: %s", delivery.queue, reason)
        await delivery.dead_letter(reason)
        if self._metrics is not None:
            self._metrics.rejected(task, delivery.queue)
        task_id = peek_id(delivery.body)
        if self._events is not None:
            self._events.rejected(task_id, delivery.queue, reason)
        if task_id is not None:
            await self.states.write(TaskMeta.from_exception(task_id, error, worker=self.hostname))
