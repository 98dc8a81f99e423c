"""Middleware: cross-cutting behaviour (metrics, tracing, logging context) around tasks.

Subclass `Middleware` and register it with `app.middleware.add(...)`, before the tasks it
declares options for. Around execution, override `handle(job, call_next)`: it takes part in
the worker's chain of middleware (`taskq.execution` lists the order), after the guard and the
rate limit and before the task's hooks, workflow, result recording, retries and time limits;
the first added is the outermost. Or override the simpler hooks, sync or async:
`before_execute` and `after_execute` (around the run, with its recorded `meta`) and
`on_retry`, which the default `handle` calls; and `before_publish`, `after_publish`,
`worker_start`, `worker_stop`. `before_*` hooks run in registration order, the others in
reverse. A hook that raises is logged and changes nothing about the task.
"""

from __future__ import annotations

import inspect
import logging
from typing import TYPE_CHECKING, Any, ClassVar

from taskq import states
from taskq.message import Message
from taskq.options import Option, OptionTable

if TYPE_CHECKING:
    from taskq.execution.job import CallNext, Job, Outcome
    from taskq.stores.base import TaskMeta
    from taskq.task import Request, Task
    from taskq.worker.worker import Worker

logger = logging.getLogger("taskq.middleware")

_EXECUTION_HOOKS = ("handle", "before_execute", "after_execute", "on_retry")


class Middleware:
    """No-op hooks; override any of them.

    `options` lists the task options this middleware reads (`taskq.options.Option`s): once
    it is added to an app, `@app.task(...)` accepts them, and a task's values are in
    `task.options[name]`.
    """

    options: ClassVar[tuple[Option, ...]] = ()

    async def handle(self, job: Job, call_next: CallNext) -> Outcome:
        """Run the job through the rest of the chain; the default calls the hooks below."""
        task, request = job.task, job.request
        await call_hook(self.before_execute, task, request, what=self._named("before_execute"))
        outcome = await call_next(job)
        if outcome.status == states.RETRY:
            retry = self._named("on_retry")
            await call_hook(self.on_retry, task, request, outcome.error, what=retry)
        after = self._named("after_execute")
        await call_hook(self.after_execute, task, request, outcome.meta, what=after)
        return outcome

    def before_publish(self, message: Message) -> Any:
        """Before a message goes to the broker (it may still be changed, e.g. headers)."""

    def after_publish(self, message: Message) -> Any:
        """After the broker has the message."""

    def before_execute(self, task: Task[Any, Any], request: Request) -> Any:
        """In the worker, before the task runs."""

    def after_execute(self, task: Task[Any, Any], request: Request, meta: TaskMeta) -> Any:
        """In the worker, after the outcome (`meta.status`) is recorded."""

    def on_retry(self, task: Task[Any, Any], request: Request, exc: BaseException | None) -> Any:
        """In the worker, when the task is to be retried (its retry is published next)."""

    def worker_start(self, worker: Worker) -> Any:
        """When a worker is ready to consume."""

    def worker_stop(self, worker: Worker) -> Any:
        """When a worker has stopped."""

    @classmethod
    def wraps_execution(cls) -> bool:
        """Whether it overrides `handle` or an execution hook (else a worker skips it)."""
        return any(getattr(cls, hook) is not getattr(Middleware, hook) for hook in _EXECUTION_HOOKS)

    def _named(self, hook: str) -> str:
        return f"{type(self).__name__}.{hook}"


class MiddlewareStack:
    """The app's middleware, called in order (`before_*`) or in reverse (the rest)."""

    def __init__(self, options: OptionTable) -> None:
        self._items: list[Middleware] = []
        self._options = options
        self.version = 0  # changes with every `add`: workers build their chains again

    def add(self, middleware: Middleware) -> None:
        """Add `middleware` (after those added before), and the task options it declares."""
        for option in middleware.options:
            self._options.add(option)
        self._items.append(middleware)
        self.version += 1

    def __bool__(self) -> bool:
        return bool(self._items)

    def wrapping_execution(self) -> list[Middleware]:
        """The middleware that takes part in running tasks, outermost first."""
        return [item for item in self._items if item.wraps_execution()]

    async def before_publish(self, message: Message) -> None:
        await self._call("before_publish", message)

    async def after_publish(self, message: Message) -> None:
        await self._call("after_publish", message, reverse=True)

    async def worker_start(self, worker: Worker) -> None:
        await self._call("worker_start", worker)

    async def worker_stop(self, worker: Worker) -> None:
        await self._call("worker_stop", worker, reverse=True)

    async def _call(self, hook: str, *args: Any, reverse: bool = False) -> None:
        for middleware in reversed(self._items) if reverse else self._items:
            await call_hook(getattr(middleware, hook), *args, what=middleware._named(hook))


async def call_hook(hook: Any, *args: Any, what: str) -> None:
    """Call a sync or async hook; log what it raises instead of propagating it."""
    try:
        outcome = hook(*args)
        if inspect.isawaitable(outcome):
            await outcome
    except Exception:
        logger.exception("Hook %s raised; ignored", what)
