"""The task's own hooks, for a task whose class (`base=`) overrides them: `on_success`,
`on_failure`, `on_retry` and `after_return` (after a success or a failure), each after the
outcome is recorded. A hook that raises is logged and changes nothing."""

from __future__ import annotations

import traceback
from typing import Any

from taskq import states
from taskq.execution.job import CallNext, Job, Outcome
from taskq.middleware import call_hook


class Hooks:
    def applies_to(self, task: Any) -> bool:
        return bool(task.has_hooks)

    async def handle(self, job: Job, call_next: CallNext) -> Outcome:
        outcome = await call_next(job)
        task, message = job.task, job.message
        common = (message.id, message.args, message.kwargs)
        if outcome.status == states.SUCCESS:
            await _call(task, "on_success", outcome.value, *common)
            retval = outcome.value
        elif outcome.status == states.FAILURE:
            einfo = (outcome.meta.traceback if outcome.meta else None) or ""
            await _call(task, "on_failure", outcome.error, *common, einfo)
            retval = outcome.error
        elif outcome.status == states.RETRY:
            error = outcome.error
            einfo = "".join(traceback.format_exception(error)) if error is not None else ""
            await _call(task, "on_retry", error, *common, einfo)
            return outcome
        else:
            return outcome
        await _call(task, "after_return", outcome.status, retval, *common)
        return outcome


async def _call(task: Any, name: str, *args: Any) -> None:
    await call_hook(getattr(task, name), *args, what=f"{task.name}.{name}")
