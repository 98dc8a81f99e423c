"""Workflow advancement: what a task's outcome starts. On success, the rest of a chain (with
the result), the count of the chord it belongs to, its links; on the final failure, the rest
of the chain fails with the same error, the chord counts the member as failed, its
link_errors run (see `taskq.workflow`)."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

from taskq import states
from taskq.execution.job import CallNext, Job, Outcome, Runtime
from taskq.workflow import in_workflow, task_failed, task_succeeded


class Advance:
    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    def applies_to(self, task: Any) -> bool:
        return True

    def handle(self, job: Job, call_next: CallNext) -> Coroutine[Any, Any, Outcome]:
        return self._advance(job, call_next) if in_workflow(job.message) else call_next(job)

    async def _advance(self, job: Job, call_next: CallNext) -> Outcome:
        job.request.advancing = self._runtime  # what `Task.add_to_chord` grows a chord with
        outcome = await call_next(job)
        if outcome.status == states.SUCCESS:
            await task_succeeded(self._runtime, job.message, outcome.value)
        elif outcome.status == states.FAILURE and outcome.meta is not None:
            await task_failed(self._runtime, job.message, outcome.meta)
        return outcome
