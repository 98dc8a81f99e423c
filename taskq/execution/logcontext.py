"""The log context: the job a log line is written for, so a structured line can say which
task it is about (`taskq.logs.JsonFormatter`). A stage, outermost, in a worker's chain when it
logs JSON: every line written while a job goes through the pipeline, taskq's and the task's
own, is in its context."""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

from taskq.execution.job import CallNext, Job, Outcome

_current_job: ContextVar[Job | None] = ContextVar("taskq_log_job", default=None)


def current_job() -> Job | None:
    """The job whose handling is logging now, if any."""
    return _current_job.get()


class LogContext:
    def applies_to(self, task: Any) -> bool:
        return True

    async def handle(self, job: Job, call_next: CallNext) -> Outcome:
        token = _current_job.set(job)
        try:
            return await call_next(job)
        finally:
            _current_job.reset(token)
