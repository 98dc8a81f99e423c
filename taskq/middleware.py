"""Middleware: cross-cutting behaviour (metrics, tracing, logging context) around tasks.

Subclass `Middleware`, override the hooks you need (sync or async), and register it
with `app.middleware.add(...)`. `before_*` hooks run in registration order, `after_*`
in reverse. A hook that raises is logged and changes nothing about the task.
"""

from __future__ import annotations

import inspect
import logging
from typing import TYPE_CHECKING, Any, ClassVar

from taskq.message import Message
from taskq.options import Option, OptionTable

if TYPE_CHECKING:
    from taskq.stores.base import TaskMeta
    from taskq.task import Request, Task
    from taskq.worker.worker import Worker

logger = logging.getLogger("taskq.middleware")


class Middleware:
    """No-op hooks; override any of them.

    `options` lists the task options this middleware reads (`taskq.options.Option`s): once
    it is added to an app, `@app.task(...)` accepts them, and a task's values are in
    `task.options[name]`.
    """

    options: ClassVar[tuple[Option, ...]] = ()

    def before_publish(self, message: Message) -> Any:
        """Before a message goes to the broker (it may still be changed, e.g. headers)."""

    def after_publish(self, message: Message) -> Any:
        """After the broker has the message."""

    def before_execute(self, task: Task[Any, Any], request: Request) -> Any:
        """In the worker, just before the task's function runs."""

    def after_execute(self, task: Task[Any, Any], request: Request, meta: TaskMeta) -> Any:
        """In the worker, after the outcome (`meta.status`) is known."""

    def on_retry(self, task: Task[Any, Any], request: Request, exc: BaseException | None) -> Any:
        """In the worker, after a retry was published."""

    def worker_start(self, worker: Worker) -> Any:
        """When a worker is ready to consume."""

    def worker_stop(self, worker: Worker) -> Any:
        """When a worker has stopped."""


class MiddlewareStack:
    """The app's middleware, called in order (`before_*`) or in reverse (the rest)."""

    def __init__(self, options: OptionTable) -> None:
        self._items: list[Middleware] = []
        self._options = options

    def add(self, middleware: Middleware) -> None:
        """Add `middleware` (after those added before), and the task options it declares."""
        for option in middleware.options:
            self._options.add(option)
        self._items.append(middleware)

    def __bool__(self) -> bool:
        return bool(self._items)

    async def before_publish(self, message: Message) -> None:
        await self._call("before_publish", message)

    async def after_publish(self, message: Message) -> None:
        await self._call("after_publish", message, reverse=True)

    async def before_execute(self, task: Task[Any, Any], request: Request) -> None:
        await self._call("before_execute", task, request)

    async def after_execute(self, task: Task[Any, Any], request: Request, meta: TaskMeta) -> None:
        await self._call("after_execute", task, request, meta, reverse=True)

    async def on_retry(
        self, task: Task[Any, Any], request: Request, exc: BaseException | None
    ) -> None:
        await self._call("on_retry", task, request, exc, reverse=True)

    async def worker_start(self, worker: Worker) -> None:
        await self._call("worker_start", worker)

    async def worker_stop(self, worker: Worker) -> None:
        await self._call("worker_stop", worker, reverse=True)

    async def _call(self, hook: str, *args: Any, reverse: bool = False) -> None:
        for middleware in reversed(self._items) if reverse else self._items:
            await call_hook(
                getattr(middleware, hook), *args, what=f"{type(middleware).__name__}.{hook}"
            )


async def call_hook(hook: Any, *args: Any, what: str) -> None:
    """Call a sync or async hook; log what it raises instead of propagating it."""
    try:
        outcome = hook(*args)
        if inspect.isawaitable(outcome):
            await outcome
    except Exception:
        logger.exception("Hook %s raised; ignored", what)
