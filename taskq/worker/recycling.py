"""Recycling a supervised worker process (`taskq worker --processes N` with
`--max-tasks-per-child` or `--max-memory-per-child`): a stage, outermost, that counts the jobs
this process ran and looks at its resident memory after each. Past a limit the worker stops
warm — running tasks finish, reserved ones go back to the queue — and the process exits with
`supervisor.RECYCLED`, for the supervisor to start another at once. Nothing is lost or run
twice: what was not run was given back unstarted."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from taskq.execution.job import CallNext, Job, Outcome
from taskq.execution.processpool import resident_kb

if TYPE_CHECKING:
    from taskq.task import Task
    from taskq.worker.worker import Worker

logger = logging.getLogger("taskq.worker")


class Recycling:
    def __init__(self, worker: Worker, max_tasks: int | None, max_memory_kb: int | None) -> None:
        self._worker = worker
        self._max_tasks = max_tasks
        self._max_memory_kb = max_memory_kb
        self._ran = 0
        self.recycled = False

    def applies_to(self, task: Task[Any, Any]) -> bool:
        return True

    async def handle(self, job: Job, call_next: CallNext) -> Outcome:
        try:
            return await call_next(job)
        finally:
            self._ran += 1
            if not self.recycled:
                self._check()

    def _check(self) -> None:
        if self._max_tasks is not None and self._ran >= self._max_tasks:
            why = f"after {self._ran} tasks (max tasks per child)"
        elif self._max_memory_kb is not None and (rss := resident_kb()) > self._max_memory_kb:
            why = f"as its memory ({rss} KB) is over {self._max_memory_kb} KB"
        else:
            return
        logger.info("Worker %s recycled %s: a warm shutdown", self._worker.hostname, why)
        self.recycled = True
        self._worker.stop()
