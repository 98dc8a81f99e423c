"""The chain of a task: the stages that apply to it, composed once, in the order of
`taskq.execution` (the app's middleware in the middle)."""

from __future__ import annotations

from collections.abc import Coroutine, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol

from taskq.execution.advance import Advance
from taskq.execution.call import Call
from taskq.execution.guard import Guard
from taskq.execution.hooks import Hooks
from taskq.execution.job import CallNext, Job, Outcome, Runtime
from taskq.execution.ratelimit import RateLimit
from taskq.execution.record import Record
from taskq.execution.replace import Replacement
from taskq.execution.retries import Retries
from taskq.execution.settlement import Settlement
from taskq.execution.timelimits import TimeLimits

if TYPE_CHECKING:
    from taskq.app import TaskQ
    from taskq.middleware import Middleware
    from taskq.task import Task


class Stage(Protocol):
    """A built-in middleware: whether a task needs it at all, and `handle` as a user's. A
    stage with nothing to do for a job may return `call_next(job)` from a plain function
    instead of awaiting it: that costs no coroutine of its own."""

    def applies_to(self, task: Task[Any, Any]) -> bool: ...

    def handle(self, job: Job, call_next: CallNext) -> Coroutine[Any, Any, Outcome]: ...


class Pipeline:
    """`await pipeline.chain(job.task)(job)`: the job through its task's chain.

    `outer` stages run before the app's middleware, `inner` ones after, `call` last. A
    task's chain is built on its first job and kept; adding middleware to the app starts
    every chain again.
    """

    def __init__(
        self, app: TaskQ, outer: Sequence[Stage], inner: Sequence[Stage], call: CallNext
    ) -> None:
        self._app = app
        self._outer = list(outer)
        self._inner = list(inner)
        self._call = call
        self._chains: dict[str, CallNext] = {}
        self._middleware_version = app.middleware.version

    def chain(self, task: Task[Any, Any]) -> CallNext:
        if self._middleware_version != self._app.middleware.version:
            self._chains.clear()
            self._middleware_version = self._app.middleware.version
        chain = self._chains.get(task.name)
        if chain is None:
            chain = self._chains[task.name] = self._build(task)
        return chain

    def rebuild(self, task_name: str) -> None:
        """Build the task's chain again on its next job: one of its options changed."""
        self._chains.pop(task_name, None)

    def _build(self, task: Task[Any, Any]) -> CallNext:
        outer = [stage for stage in self._outer if stage.applies_to(task)]
        inner = [stage for stage in self._inner if stage.applies_to(task)]
        handler = self._call
        stages: list[Stage | Middleware] = [*outer, *self._app.middleware.wrapping_execution()]
        for stage in reversed([*stages, *inner]):
            handler = partial(stage.handle, call_next=handler)
        return handler


def standard_pipeline(
    runtime: Runtime,
    *,
    rate_limits: bool = True,
    outermost: Sequence[Stage] = (),
    settled: Sequence[Stage] = (),
) -> Pipeline:
    """The built-in stages in their order (see `taskq.execution`), around the app's middleware;
    `outermost` first (a worker's log context and metrics, when it has them), so they see
    every outcome; `settled` first inside the settlement (what they do comes before a retry is
    published and the delivery acked: the task events)."""
    outer: list[Stage] = [*outermost, Guard(runtime)]
    if rate_limits:
        outer.append(RateLimit(runtime))
    outer.append(Settlement(runtime))
    inner: list[Stage] = [
        *settled,
        Hooks(),
        Advance(runtime),
        Record(runtime),
        Retries(runtime),
        Replacement(runtime),
        TimeLimits(runtime),
    ]
    return Pipeline(runtime.app, outer, inner, Call(runtime))
