"""Running one delivery: the guard (decode, accept, known task, arguments, expiry),
the task itself (coroutine in the loop, plain function in a thread), its states and its ack."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio

from taskq import states
from taskq.brokers.base import Delivery
from taskq.errors import MessageError, NotRegisteredError, TaskQError
from taskq.message import Message, decode, peek_id
from taskq.stores.base import ResultStore, TaskMeta
from taskq.task import Request, Task

if TYPE_CHECKING:
    from taskq.app import TaskQ

logger = logging.getLogger("taskq.worker")


class WorkerLostError(TaskQError):
    """The worker stopped while the task ran and the message could not be given back."""


class BadArgumentsError(TaskQError):
    """The message's arguments do not fit the task function's signature."""


@dataclass(slots=True)
class Job:
    """A delivery that passed the guard: ready to wait for a slot and run."""

    delivery: Delivery
    message: Message
    task: Task[Any, Any]
    request: Request

    @property
    def acks_late(self) -> bool:
        return bool(
            self.task.acks_late
            if self.task.acks_late is not None
            else self.task.app.conf.task_acks_late
        )

    @property
    def stores_result(self) -> bool:
        ignore = self.task.ignore_result
        return not (ignore if ignore is not None else self.task.app.conf.task_ignore_result)


class Executor:
    def __init__(
        self, app: TaskQ, store: ResultStore, hostname: str, threads: anyio.CapacityLimiter
    ) -> None:
        self.app = app
        self.store = store
        self.hostname = hostname
        self.threads = threads
        self.accept_content = frozenset(app.conf.accept_content)
        self.result_ttl = app.conf.result_expires

    async def receive(self, delivery: Delivery) -> Job | None:
        """Check a fresh delivery; a bad one is dead-lettered (and its task marked FAILURE)."""
        try:
            message = decode(delivery.body, self.accept_content)
            task = self.app.get_task(message.task)
            task.bind_arguments(message.args, message.kwargs)
        except (MessageError, NotRegisteredError) as exc:
            await self._reject(delivery, exc)
            return None
        except TypeError as exc:
            await self._reject(delivery, BadArgumentsError(f"{message.task}: {exc}"))
            return None
        info = {
            "queue": delivery.queue,
            "priority": message.priority,
            "delivery_count": delivery.delivery_count,
        }
        job = Job(delivery, message, task, Request.from_message(message, info, self.hostname))
        if message.expires is not None and message.expires < time.time():
            logger.info("Task %s[%s] expired, revoked", message.task, message.id)
            await self._record(
                job, TaskMeta(message.id, states.REVOKED, task=message.task, date_done=time.time())
            )
            await delivery.ack()
            return None
        if job.stores_result:
            await self._record(job, self._meta(job, states.RECEIVED))
        return job

    async def run(self, job: Job) -> None:
        """Execute a received job in the caller's slot; ack before or after per `acks_late`."""
        message, task = job.message, job.task
        if not job.acks_late:
            await job.delivery.ack()
        if job.stores_result:
            await self._record(job, self._meta(job, states.STARTED))
        logger.debug("Task %s[%s] started", message.task, message.id)
        started = time.perf_counter()
        try:
            value = await self._call(task, job.request)
        except anyio.get_cancelled_exc_class():
            with anyio.CancelScope(shield=True):
                await self._lost(job)
            raise
        except Exception as exc:
            elapsed = time.perf_counter() - started
            logger.error(
                "Task %s[%s] raised %s: %s (%.3fs)",
                message.task,
                message.id,
                type(exc).__name__,
                exc,
                elapsed,
            )
            meta = TaskMeta.from_exception(
                message.id, exc, task=message.task, retries=message.retries, worker=self.hostname
            )
        else:
            logger.info(
                "Task %s[%s] succeeded in %.3fs",
                message.task,
                message.id,
                time.perf_counter() - started,
            )
            meta = self._meta(job, states.SUCCESS, result=value, date_done=time.time())
        if job.stores_result:
            await self._record(job, meta)
        if job.acks_late:
            await job.delivery.ack()

    async def _call(self, task: Task[Any, Any], request: Request) -> Any:
        if task.is_coroutine:
            return await task.run_async(request)
        return await anyio.to_thread.run_sync(
            task.run_sync, request, limiter=self.threads, abandon_on_cancel=True
        )

    async def _lost(self, job: Job) -> None:
        """The task was cancelled by a cold shutdown: give it back, or record that it is lost."""
        if job.acks_late:
            logger.warning(
                "Task %s[%s] interrupted, returned to the queue", job.message.task, job.message.id
            )
            await job.delivery.nack(requeue=True)
            return
        logger.warning(
            "Task %s[%s] interrupted after its early ack: lost", job.message.task, job.message.id
        )
        if job.stores_result:
            error = WorkerLostError("worker shut down while the task ran (not acks_late)")
            await self._record(
                job, TaskMeta.from_exception(job.message.id, error, task=job.message.task)
            )

    async def _reject(self, delivery: Delivery, error: TaskQError) -> None:
        reason = f"{type(error).__name__}: {error}"
        logger.error("Dead-lettered a message from %r: %s", delivery.queue, reason)
        await delivery.dead_letter(reason)
        task_id = peek_id(delivery.body)
        if task_id is not None:
            await self.store.set_state(
                task_id,
                TaskMeta.from_exception(task_id, error, worker=self.hostname),
                self.result_ttl,
            )

    async def _record(self, job: Job, meta: TaskMeta) -> None:
        try:
            await self.store.set_state(job.message.id, meta, self.result_ttl)
        except MessageError as exc:  # the return value does not serialize: record that instead
            failure = TaskMeta.from_exception(
                job.message.id, exc, task=job.message.task, worker=self.hostname
            )
            await self.store.set_state(job.message.id, failure, self.result_ttl)

    def _meta(self, job: Job, status: str, **fields: Any) -> TaskMeta:
        message = job.message
        return TaskMeta(
            message.id,
            status,
            task=message.task,
            retries=message.retries,
            worker=self.hostname,
            **fields,
        )
