"""Time limits: a task's `time_limit` and `soft_time_limit` (the call's, else the task's,
else the app's `task_time_limit` / `task_soft_time_limit`).

For a coroutine the hard limit is a cancel scope: the coroutine is cancelled and the task
fails with `TimeLimitExceeded`. The soft limit raises `SoftTimeLimitExceeded` *inside* the
coroutine, at the await it is blocked on, so the task may catch it and clean up. asyncio can
only interrupt a waiting task by cancelling it, so the coroutine is driven by a thin wrapper
that turns our own cancellation into that exception. A plain function in a thread cannot be
interrupted: past its hard limit it is abandoned (its result discarded) and the task fails.
A plain function in a pool process is limited as a coroutine is: the soft limit reaches the
process as a signal (`taskq.execution.processpool`), the hard one kills it.
"""

from __future__ import annotations

import asyncio
import types
from collections.abc import Coroutine, Generator
from typing import Any

import anyio

from taskq.errors import SoftTimeLimitExceeded, TimeLimitExceeded
from taskq.execution.job import CallNext, Job, Outcome, Runtime


class TimeLimits:
    def __init__(self, runtime: Runtime) -> None:
        self._processes = runtime.processes

    def applies_to(self, task: Any) -> bool:
        return True

    def handle(self, job: Job, call_next: CallNext) -> Coroutine[Any, Any, Outcome]:
        task, message, conf = job.task, job.message, job.task.app.conf
        hard = message.time_limit or task.time_limit or conf.task_time_limit
        soft = message.soft_time_limit or task.soft_time_limit or conf.task_soft_time_limit
        if task.is_coroutine or (self._processes is not None and self._processes.takes(task)):
            if hard is None and soft is None:
                return call_next(job)
            return run_with_limits(call_next(job), soft, hard)
        if hard is None:  # a soft limit cannot reach into a thread
            return call_next(job)
        return _abandoned_after(hard, call_next(job))


async def _abandoned_after(hard: float, run: Coroutine[Any, Any, Outcome]) -> Outcome:
    with anyio.move_on_after(hard):
        return await run
    raise TimeLimitExceeded(f"hard time limit ({hard}s) exceeded; the thread was abandoned")


async def run_with_limits(
    coro: Coroutine[Any, Any, Any], soft: float | None, hard: float | None
) -> Any:
    """Await `coro` under a soft and a hard time limit (seconds; None for none)."""
    if hard is None and soft is None:
        return await coro
    with anyio.CancelScope(deadline=_deadline(hard)) as scope:
        return await (_soft_limited(coro, soft) if soft is not None else coro)
    if scope.cancelled_caught:
        raise TimeLimitExceeded(f"hard time limit ({hard}s) exceeded")
    return None  # pragma: no cover - the block either returned or was cancelled


def _deadline(seconds: float | None) -> float:
    return anyio.current_time() + seconds if seconds is not None else float("inf")


async def _soft_limited(coro: Coroutine[Any, Any, Any], soft: float) -> Any:
    task = asyncio.current_task()
    assert task is not None
    alarm = _Alarm(task)
    handle = asyncio.get_running_loop().call_later(soft, alarm.ring)
    try:
        return await _drive(coro, alarm, soft)
    finally:
        handle.cancel()


class _Alarm:
    """Cancels the task once; the driver recognises that cancellation as the soft limit."""

    def __init__(self, task: asyncio.Task[Any]) -> None:
        self.task = task
        self.pending = False

    def ring(self) -> None:
        self.pending = True
        self.task.cancel()


@types.coroutine
def _drive(coro: Coroutine[Any, Any, Any], alarm: _Alarm, soft: float) -> Generator[Any, Any, Any]:
    """Run `coro` step by step, passing everything through except the alarm's cancellation,
    which becomes `SoftTimeLimitExceeded` thrown into `coro`."""
    value: Any = None
    error: BaseException | None = None
    while True:
        try:
            yielded = coro.throw(error) if error is not None else coro.send(value)
        except StopIteration as stop:
            return stop.value
        value, error = None, None
        try:
            value = yield yielded
        except asyncio.CancelledError as exc:
            if alarm.pending:
                alarm.pending = False
                alarm.task.uncancel()
                error = SoftTimeLimitExceeded(f"soft time limit ({soft}s) exceeded")
            else:
                error = exc
        except BaseException as exc:
            error = exc
