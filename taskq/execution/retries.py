"""Retries: what an exception from the task becomes.

`raise self.retry(...)` (a `Retry`) and an exception in the task's `autoretry_for` (with
retries left) become a RETRY outcome carrying the same task id again with `retries + 1`,
due after the countdown or at the retry's eta (expiring at its `expires`, if it has one);
settlement publishes it once RETRY is recorded. Any other exception is the final FAILURE. A
task whose retries are exhausted goes to the dead letters right here, with the reason and
traceback, before its FAILURE is recorded: once `get()` raises, the message can be replayed
(a copy is kept if it was acked early).
"""

from __future__ import annotations

import dataclasses
import logging
import time
import traceback
from typing import Any

import anyio

from taskq import states
from taskq.errors import Retry
from taskq.execution.job import CallNext, Job, Outcome, Runtime
from taskq.stores.base import exception_type

logger = logging.getLogger("taskq.worker")


class Retries:
    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    def applies_to(self, task: Any) -> bool:
        return True

    async def handle(self, job: Job, call_next: CallNext) -> Outcome:
        try:
            return await call_next(job)
        except anyio.get_cancelled_exc_class():
            raise
        except Retry as retry:
            return _retry(job, retry.exc, retry.countdown, retry.eta, retry.expires)
        except Exception as exc:
            task, message = job.task, job.message
            if task.autoretries(exc):
                if not _exhausted(task, message.retries):
                    return _retry(job, exc, task.retry_countdown(message.retries))
                job.request.retries_exhausted = True
            if job.request.retries_exhausted:
                await self._bury(job, f"retries exhausted ({message.retries}): {_described(exc)}")
            return Outcome(states.FAILURE, error=exc, elapsed=time.perf_counter() - job.run_at)

    async def _bury(self, job: Job, reason: str) -> None:
        if job.delivery.settled:
            await self._runtime.add_dead_letter(job.delivery.queue, job.delivery.body, reason)
        else:
            await job.delivery.dead_letter(reason)


def _retry(
    job: Job,
    exc: BaseException | None,
    countdown: float | None,
    eta: float | None = None,
    expires: float | None = None,
) -> Outcome:
    message = job.message
    now = time.time()
    due = eta if eta is not None else now + (countdown or 0.0)
    delay = max(due - now, 0.0)
    again = dataclasses.replace(
        message,
        retries=message.retries + 1,
        eta=due,
        expires=expires if expires is not None else message.expires,
        sent_at=now,
    )
    logger.info(
        "Task %s[%s] retry %d in %.1fs: %r", message.task, message.id, again.retries, delay, exc
    )
    error = exc if exc is not None else Retry(None, countdown, eta=eta)
    elapsed = time.perf_counter() - job.run_at
    return Outcome(states.RETRY, error=error, retry=again, elapsed=elapsed)


def _exhausted(task: Any, retries: int) -> bool:
    return task.max_retries is not None and retries >= task.max_retries


def _described(exc: BaseException) -> str:
    return f"{exception_type(exc)}: {exc}\n" + "".join(traceback.format_exception(exc))
