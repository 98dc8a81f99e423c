"""Running one delivery: the guard (decode, accept, known task, arguments, expiry,
revocation), the task itself (coroutine in the loop, plain function in a thread) under
its time limits, its retries, states, hooks and ack."""

from __future__ import annotations

import dataclasses
import logging
import time
import traceback
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio

from taskq import states
from taskq.brokers.base import Broker, Delivery
from taskq.errors import (
    BadArgumentsError,
    MessageError,
    NotRegisteredError,
    Retry,
    TaskQError,
    TaskRevokedError,
    TimeLimitExceeded,
    WorkerLostError,
)
from taskq.message import Message, decode, encode, peek_id
from taskq.middleware import call_hook
from taskq.stores.base import ResultStore, TaskMeta
from taskq.task import Request, Task
from taskq.worker.batching import Coalescer, RevokedIds
from taskq.worker.statewriter import StateWriter
from taskq.worker.timelimits import run_with_limits
from taskq.workflow import in_workflow, reads_results_next, task_failed, task_succeeded

if TYPE_CHECKING:
    from taskq.app import TaskQ

logger = logging.getLogger("taskq.worker")

UNHANDLED_TIMEOUT = 10.0  # seconds given to dead-lettering a delivery whose handling failed


@dataclass(slots=True)
class Job:
    """A delivery that passed the guard: ready to wait for a slot and run."""

    delivery: Delivery
    message: Message
    task: Task[Any, Any]
    request: Request
    terminated: bool = False  # revoked with terminate=True while running
    acks_late: bool = field(init=False)
    stores_result: bool = field(init=False)

    def __post_init__(self) -> None:
        self.acks_late = self._flag("acks_late")
        ignored = self.message.ignore_result  # the call's, else the task's, else the app's
        self.stores_result = not (self._flag("ignore_result") if ignored is None else ignored)

    @property
    def requeued_when_lost(self) -> bool:
        """An `acks_late` task cut short by a cold shutdown goes back to the queue."""
        return self.acks_late and self._flag("reject_on_worker_lost")

    def _flag(self, name: str) -> bool:
        """The task's own option `name`, or the app's `task_<name>` when the task has none."""
        value = getattr(self.task, name)
        return bool(value if value is not None else getattr(self.task.app.conf, f"task_{name}"))


class Executor:
    def __init__(
        self,
        app: TaskQ,
        broker: Broker,
        store: ResultStore,
        hostname: str,
        threads: anyio.CapacityLimiter,
    ) -> None:
        self.app = app
        self.broker = broker
        self.store = store
        self.hostname = hostname
        self.threads = threads
        self.accept_content = frozenset(app.conf.accept_content)
        self.states = StateWriter(store, app.conf.result_expires)
        self.revoked = RevokedIds(app.control.revoke_ttl)
        self._stored_revocations = Coalescer(self.store.revoked)
        self._revocations_loaded = False

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
            await self.skip(job, "expired")
            return None
        if await self._is_revoked(message):
            await self.skip(job, "revoked")
            return None
        return job

    async def load_revocations(self) -> None:
        """Take in the store's revocations. Called once broadcasts reach this worker: from
        then on, `revoked` alone is complete (a revocation is stored, then broadcast)."""
        self.revoked.add(await self.store.all_revoked())
        self._revocations_loaded = True

    async def _is_revoked(self, message: Message) -> bool:
        if message.id in self.revoked:
            return True
        if self._revocations_loaded:
            return False
        return await self._stored_revocations.contains(message.id)  # batched

    async def mark_received(self, job: Job) -> None:
        """Record RECEIVED for a job that has to wait for a slot or its rate limit."""
        if job.stores_result:
            await self.states.write(self._meta(job, states.RECEIVED))

    async def skip(self, job: Job, reason: str) -> None:
        """Settle a job that must not run: REVOKED with `reason` ("expired", "revoked")."""
        logger.info("Task %s[%s] %s: not run", job.message.task, job.message.id, reason)
        error = TaskRevokedError(reason)
        await self.states.write(self._failure(job, error, status=states.REVOKED))
        await job.delivery.ack()

    async def run(self, job: Job) -> None:
        """Execute a received job in the caller's slot; ack before or after per `acks_late`."""
        message, task = job.message, job.task
        if not job.acks_late:
            await job.delivery.ack()
        if job.stores_result:
            self.states.put(self._meta(job, states.STARTED))  # written while the task runs
        if self.app.middleware:
            await self.app.middleware.before_execute(task, job.request)
        started = time.perf_counter()
        try:
            value = await self._call(job)
        except anyio.get_cancelled_exc_class():
            with anyio.CancelScope(shield=True):
                await self._lost(job)
            raise
        except Retry as retry:
            await self._retry(job, retry.exc, retry.countdown)
            return
        except Exception as exc:
            if task.autoretries(exc) and not _exhausted(task, message):
                await self._retry(job, exc, task.retry_countdown(message.retries))
                return
            job.request.retries_exhausted |= task.autoretries(exc)
            await self._failed(job, exc, time.perf_counter() - started)
        else:
            await self._succeeded(job, value, time.perf_counter() - started)
        if job.acks_late:
            await job.delivery.ack()

    async def _call(self, job: Job) -> Any:
        task, request = job.task, job.request
        conf = self.app.conf
        hard = request.time_limit or task.time_limit or conf.task_time_limit
        soft = request.soft_time_limit or task.soft_time_limit or conf.task_soft_time_limit
        if task.is_coroutine:
            return await run_with_limits(task.run_async(request), soft, hard)
        # A thread cannot be interrupted: past the hard limit it is abandoned (its
        # eventual result discarded) and the slot freed.
        with anyio.move_on_after(hard if hard is not None else float("inf")) as scope:
            return await anyio.to_thread.run_sync(
                task.run_sync, request, limiter=self.threads, abandon_on_cancel=True
            )
        if scope.cancelled_caught:
            raise TimeLimitExceeded(f"hard time limit ({hard}s) exceeded; the thread was abandoned")
        return None  # pragma: no cover - the block either returned or was cancelled

    async def _succeeded(self, job: Job, value: Any, elapsed: float) -> None:
        message, task = job.message, job.task
        logger.info("Task %s[%s] succeeded in %.3fs", message.task, message.id, elapsed)
        meta = self._meta(job, states.SUCCESS, result=value, date_done=time.time())
        if job.stores_result:
            # Stored before whatever may rely on it (the ack of an acks_late task, the task's
            # hooks, a workflow's next step); else written behind the loop, which goes on to
            # its next task: that overlaps the write with the next task's ack.
            stored_first = job.acks_late or task.has_hooks or reads_results_next(message)
            await self.states.record(meta, wait=stored_first)
        if in_workflow(message):
            await task_succeeded(self.app, message, value)
        await _hook(task, "on_success", value, message.id, message.args, message.kwargs)
        await self._finished(job, meta, value)

    async def _failed(self, job: Job, exc: BaseException, elapsed: float) -> None:
        message, task = job.message, job.task
        logger.error(
            "Task %s[%s] raised %s: %s (%.3fs)",
            message.task,
            message.id,
            type(exc).__name__,
            exc,
            elapsed,
        )
        meta = self._failure(job, exc)
        if job.request.retries_exhausted:  # buried before FAILURE is seen: the replay is there
            error = f"{meta.exc_type}: {meta.exc_message}"
            await self._bury(
                job, f"retries exhausted ({message.retries}): {error}\n{meta.traceback}"
            )
        if job.stores_result:
            await self.states.write(meta)
        if in_workflow(message):
            await task_failed(self.app, message, meta)
        args = (exc, message.id, message.args, message.kwargs, meta.traceback or "")
        await _hook(task, "on_failure", *args)
        await self._finished(job, meta, exc)

    async def _finished(self, job: Job, meta: TaskMeta, retval: Any) -> None:
        message = job.message
        after = (meta.status, retval, message.id, message.args, message.kwargs)
        await _hook(job.task, "after_return", *after)
        if self.app.middleware:
            await self.app.middleware.after_execute(job.task, job.request, meta)

    async def _retry(self, job: Job, exc: BaseException | None, countdown: float | None) -> None:
        """Publish the same task id again with `retries + 1`, delayed through the broker."""
        message, task = job.message, job.task
        delay = countdown or 0.0
        again = dataclasses.replace(
            message, retries=message.retries + 1, eta=time.time() + delay, sent_at=time.time()
        )
        await self.broker.publish(again, job.delivery.queue)
        logger.info(
            "Task %s[%s] retry %d in %.1fs: %r", message.task, message.id, again.retries, delay, exc
        )
        if job.stores_result:
            error = exc if exc is not None else Retry(None, countdown)
            await self.states.write(self._failure(job, error, status=states.RETRY))
        if job.acks_late:
            await job.delivery.ack()
        einfo = "".join(traceback.format_exception(exc)) if exc is not None else ""
        await _hook(task, "on_retry", exc, message.id, message.args, message.kwargs, einfo)
        await self.app.middleware.on_retry(task, job.request, exc)

    async def _lost(self, job: Job) -> None:
        """The task was cancelled: terminated by a revoke, or by a cold shutdown, which
        gives it back (`acks_late` with `reject_on_worker_lost`) or records that it is lost."""
        message = job.message
        if job.terminated:
            await self.skip(job, "revoked")
            return
        if job.requeued_when_lost:
            logger.warning(
                "Task %s[%s] interrupted, returned to the queue", message.task, message.id
            )
            await job.delivery.nack(requeue=True)
            return
        logger.warning("Task %s[%s] interrupted by a cold shutdown: lost", message.task, message.id)
        if job.stores_result:
            error = WorkerLostError("the worker shut down while the task ran")
            await self.states.write(self._failure(job, error))
        if job.acks_late:
            await job.delivery.ack()

    async def _reject(self, delivery: Delivery, error: TaskQError) -> None:
        reason = f"{type(error).__name__}: {error}"
        logger.error("Dead-lettered a message from %r: %s", delivery.queue, reason)
        await delivery.dead_letter(reason)
        task_id = peek_id(delivery.body)
        if task_id is not None:
            await self.states.write(TaskMeta.from_exception(task_id, error, worker=self.hostname))

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

    async def _bury(self, job: Job, reason: str) -> None:
        """Dead-letter a job whose retries are exhausted, acked or not."""
        if job.acks_late:
            await job.delivery.dead_letter(reason)
        else:
            await self.broker.add_dead_letter(job.delivery.queue, encode(job.message), reason)

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

    def _failure(self, job: Job, exc: BaseException, status: str = states.FAILURE) -> TaskMeta:
        message = job.message
        meta = TaskMeta.from_exception(
            message.id, exc, task=message.task, retries=message.retries, worker=self.hostname
        )
        meta.status = status
        return meta


async def _hook(task: Task[Any, Any], name: str, *args: Any) -> None:
    """Call a task hook (`on_success`, ...), unless the task class has none of its own."""
    if task.has_hooks:
        await call_hook(getattr(task, name), *args, what=f"{task.name}.{name}")


def _exhausted(task: Task[Any, Any], message: Message) -> bool:
    return task.max_retries is not None and message.retries >= task.max_retries
