"""The guard: a job past its `expires`, or revoked, is settled as REVOKED and never runs."""

from __future__ import annotations

import logging
import time
from collections.abc import Coroutine
from typing import Any

from taskq import states
from taskq.errors import TaskRevokedError
from taskq.execution.job import CallNext, Job, Outcome, Runtime
from taskq.execution.meta import failure

logger = logging.getLogger("taskq.worker")


class Guard:
    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    def applies_to(self, task: Any) -> bool:
        return True

    def handle(self, job: Job, call_next: CallNext) -> Coroutine[Any, Any, Outcome]:
        message = job.message
        if message.expires is not None and message.expires < time.time():
            return skip(self._runtime, job, "expired")
        revoked = self._runtime.revoked_now(message.id)
        if revoked is None:
            return self._ask_store(job, call_next)
        return skip(self._runtime, job, "revoked") if revoked else call_next(job)

    async def _ask_store(self, job: Job, call_next: CallNext) -> Outcome:
        if await self._runtime.is_revoked(job.message.id):
            return await skip(self._runtime, job, "revoked")
        return await call_next(job)


async def skip(runtime: Runtime, job: Job, reason: str) -> Outcome:
    """Settle a job that must not run (any more): REVOKED with `reason`, acked. Its one log
    line says whether it was cut short or never started."""
    task, task_id = job.message.task, job.message.id
    if job.started:
        logger.warning("Task %s[%s] %s: terminated while running", task, task_id, reason)
    else:
        logger.info("Task %s[%s] %s: discarded before it ran", task, task_id, reason)
    runtime.report_revoked(job, reason)
    error = TaskRevokedError(reason)
    meta = failure(job, runtime.hostname, error, status=states.REVOKED)
    await runtime.states.write(meta)
    await job.delivery.ack()
    return Outcome(states.REVOKED, error=error, meta=meta)
