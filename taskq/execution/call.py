"""The innermost step: the task's function, a coroutine in the event loop, or a plain function
in a worker thread or a pool process (`taskq.execution.processpool`), under the job's request
context."""

from __future__ import annotations

import time

import anyio

from taskq import states
from taskq.execution.job import Job, Outcome, Runtime


class Call:
    def __init__(self, runtime: Runtime) -> None:
        self._threads = runtime.threads
        self._processes = runtime.processes

    async def __call__(self, job: Job) -> Outcome:
        task, request = job.task, job.request
        started = job.run_at = time.perf_counter()
        if task.is_coroutine:
            value = await task.run_async(request)
        elif self._processes is not None and self._processes.takes(task):
            value = await self._processes.run(job)  # killed when a hard time limit cancels it
        else:  # abandoned, not waited for, when a hard time limit cancels it
            value = await anyio.to_thread.run_sync(
                task.run_sync, request, limiter=self._threads, abandon_on_cancel=True
            )
        return Outcome(states.SUCCESS, value, elapsed=time.perf_counter() - started)
