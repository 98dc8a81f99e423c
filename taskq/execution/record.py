"""Result recording: STARTED while the task runs (unless `track_started` is off), then the
outcome's state.

A task's SUCCESS may be written behind it (its slot goes on to the next task while the write
is in flight), unless something run next relies on it being stored first: the task's own
hooks, or what its success starts that may read it (a chain's next step, a chord's callback,
a link). The write under way goes with the outcome: the ack of an `acks_late` task waits
for it (see `taskq.execution.settlement`). A result that cannot be serialized makes the outcome a
FAILURE saying so, before anything is logged, stored or started with it.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from taskq import states, typed_json
from taskq.errors import MessageError
from taskq.execution.job import REPLACED, CallNext, Job, Outcome, Runtime
from taskq.execution.meta import failure, state
from taskq.workflow import reads_results_next

logger = logging.getLogger("taskq.worker")

DEAD_LETTERED = "; retries exhausted: dead-lettered"

# Results of these types always serialize: nothing to check.
_PLAIN = frozenset({type(None), bool, int, float, str})


class Record:
    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    def applies_to(self, task: Any) -> bool:
        return True

    async def handle(self, job: Job, call_next: CallNext) -> Outcome:
        hostname, writer = self._runtime.hostname, self._runtime.states
        if job.stores_started:
            writer.put(state(job, hostname, states.STARTED))  # written while the task runs
        outcome = await call_next(job)
        if outcome.status == REPLACED:  # its replacement records the outcome, under its id
            return outcome
        message = job.message
        problem = _unserializable(outcome.value) if outcome.status == states.SUCCESS else None
        if problem is not None:
            error = MessageError(f"task {message.task!r}: result is not serializable: {problem}")
            outcome = Outcome(states.FAILURE, error=error, elapsed=outcome.elapsed)
        if outcome.status == states.SUCCESS:
            logger.info("Task %s[%s] succeeded in %.3fs", message.task, message.id, outcome.elapsed)
            outcome.meta = state(job, hostname, states.SUCCESS, outcome.value, time.time())
            if job.stores_result:
                stored_first = job.task.has_hooks or reads_results_next(message)
                outcome.written = await writer.record(
                    outcome.meta, wait=stored_first, acked=job.acks_late
                )
            return outcome
        assert outcome.error is not None  # a FAILURE or a RETRY
        if outcome.status == states.FAILURE:  # with its traceback, in the log as in the store
            logger.error(
                "Task %s[%s] raised %s: %s (%.3fs)%s",
                message.task,
                message.id,
                type(outcome.error).__name__,
                outcome.error,
                outcome.elapsed,
                DEAD_LETTERED if job.request.retries_exhausted else "",
                exc_info=outcome.error,
            )
        outcome.meta = failure(job, hostname, outcome.error, status=outcome.status)
        if job.stores_result:
            await writer.write(outcome.meta)
        return outcome


def _unserializable(value: Any) -> str | None:
    """Why `value` cannot be stored as JSON, if it cannot."""
    if type(value) in _PLAIN:
        return None
    try:
        typed_json.dumps(value)
    except TypeError as exc:
        return str(exc)
    return None
