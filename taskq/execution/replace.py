"""Replacement: a bound task that called `self.replace(sig)` ends here. The signature is
published in its place (`taskq.workflow.replace`), under its id, continuing its chain,
chord and links; the task itself records no outcome and starts nothing."""

from __future__ import annotations

import logging
import time
from typing import Any

import anyio

from taskq import states
from taskq.errors import Replace
from taskq.execution.job import REPLACED, CallNext, Job, Outcome, Runtime
from taskq.execution.meta import state
from taskq.workflow import replace

logger = logging.getLogger("taskq.worker")


class Replacement:
    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    def applies_to(self, task: Any) -> bool:
        return bool(task.bind)  # only a bound task can call self.replace()

    async def handle(self, job: Job, call_next: CallNext) -> Outcome:
        try:
            return await call_next(job)
        except anyio.get_cancelled_exc_class():
            raise
        except Replace as replaced:
            message, runtime = job.message, self._runtime
            if job.stores_started:  # stored before the replacement can store its own states
                await runtime.states.write(state(job, runtime.hostname, states.STARTED))
            await replace(runtime, message, replaced.element)
            logger.info("Task %s[%s] replaced by %s", message.task, message.id, replaced)
            return Outcome(REPLACED, elapsed=time.perf_counter() - job.run_at)
