"""Task: a registered function with its options, and the request context it runs in."""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar

from taskq.message import Message, new_id
from taskq.result import AsyncResult

if TYPE_CHECKING:
    from taskq.app import TaskQ

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(slots=True)
class Request:
    """What a running task knows about its own invocation (`self.request` in a bound task)."""

    id: str
    task: str
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    retries: int = 0
    root_id: str | None = None
    parent_id: str | None = None
    group_id: str | None = None
    group_index: int | None = None
    eta: float | None = None
    expires: float | None = None
    headers: dict[str, Any] = field(default_factory=dict)
    delivery_info: dict[str, Any] = field(default_factory=dict)
    hostname: str | None = None
    is_eager: bool = False

    @classmethod
    def from_message(
        cls, message: Message, delivery_info: dict[str, Any], hostname: str
    ) -> Request:
        return cls(
            id=message.id,
            task=message.task,
            args=message.args,
            kwargs=message.kwargs,
            retries=message.retries,
            root_id=message.root_id,
            parent_id=message.parent_id,
            group_id=message.group_id,
            group_index=message.group_index,
            eta=message.eta,
            expires=message.expires,
            headers=message.headers,
            delivery_info=delivery_info,
            hostname=hostname,
        )


_current_request: ContextVar[Request | None] = ContextVar("taskq_request", default=None)


def current_request() -> Request | None:
    """The request of the task running in this context, if any."""
    return _current_request.get()


TASK_OPTIONS = frozenset(
    {
        "queue",
        "priority",
        "ignore_result",
        "max_retries",
        "default_retry_delay",
        "acks_late",
        "time_limit",
        "soft_time_limit",
        "rate_limit",
        "expires",
        "serializer",
    }
)
CALL_OPTIONS = frozenset(
    {"queue", "priority", "countdown", "eta", "expires", "headers", "serializer"}
)


class Task(Generic[P, R]):
    """A function registered with `@app.task`.

    `await task.delay(...)` / `await task.apply_async(...)` publish it; calling the
    task directly runs the function inline, with no broker.
    """

    def __init__(
        self,
        app: TaskQ,
        fn: Callable[..., Any],
        name: str,
        bind: bool = False,
        **options: Any,
    ) -> None:
        unknown = set(options) - TASK_OPTIONS
        if unknown:
            raise TypeError(f"unknown task option(s) for {name!r}: {', '.join(sorted(unknown))}")
        self.app = app
        self.fn = fn
        self.name = name
        self.bind = bind
        self.is_coroutine = inspect.iscoroutinefunction(fn)
        self.signature = inspect.signature(fn)
        self.queue: str | None = options.get("queue")
        self.priority: int | None = options.get("priority")
        self.ignore_result: bool | None = options.get("ignore_result")
        self.max_retries: int | None = options.get("max_retries", 3)
        self.default_retry_delay: float = options.get("default_retry_delay", 180.0)
        self.acks_late: bool | None = options.get("acks_late")
        self.time_limit: float | None = options.get("time_limit")
        self.soft_time_limit: float | None = options.get("soft_time_limit")
        self.rate_limit: str | None = options.get("rate_limit")
        self.expires: float | timedelta | datetime | None = options.get("expires")
        self.serializer: str | None = options.get("serializer")
        self.__doc__ = fn.__doc__
        self.__wrapped__ = fn

    def __repr__(self) -> str:
        return f"<Task {self.name}>"

    @property
    def request(self) -> Request:
        """The request of the current invocation of this task."""
        request = _current_request.get()
        if request is None or request.task != self.name:
            return Request(id="", task=self.name, is_eager=True)
        return request

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Any:
        """Run the function inline: a coroutine for `async def`, the value otherwise."""
        if self.bind:
            return self.fn(self, *args, **kwargs)
        return self.fn(*args, **kwargs)

    async def delay(self, *args: P.args, **kwargs: P.kwargs) -> AsyncResult[R]:
        """Publish with these arguments and default options."""
        return await self.apply_async(args, kwargs)

    async def apply_async(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        *,
        task_id: str | None = None,
        queue: str | None = None,
        priority: int | None = None,
        countdown: float | None = None,
        eta: datetime | float | None = None,
        expires: float | timedelta | datetime | None = None,
        headers: Mapping[str, Any] | None = None,
        serializer: str | None = None,
    ) -> AsyncResult[R]:
        """Publish with explicit options; they win over the task's, which win over routes."""
        message = self.app.build_message(
            self.name,
            args,
            kwargs,
            task_id=task_id,
            queue=queue or self.queue,
            priority=priority if priority is not None else self.priority,
            countdown=countdown,
            eta=eta,
            expires=expires if expires is not None else self.expires,
            headers=headers,
            serializer=serializer or self.serializer,
        )
        return await self.app.send_message(message)

    def bind_arguments(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
        """Raise TypeError when the arguments do not fit the function's signature."""
        if self.bind:
            self.signature.bind(self, *args, **kwargs)
        else:
            self.signature.bind(*args, **kwargs)

    async def run_async(self, request: Request) -> Any:
        """Await the coroutine function under `request`'s context."""
        token = _current_request.set(request)
        try:
            return await self(*request.args, **request.kwargs)
        finally:
            _current_request.reset(token)

    def run_sync(self, request: Request) -> Any:
        """Call the plain function under `request`'s context (in a worker thread)."""
        token = _current_request.set(request)
        try:
            return self(*request.args, **request.kwargs)
        finally:
            _current_request.reset(token)


def absolute_time(
    value: datetime | float | timedelta | None, now: float | None = None
) -> float | None:
    """Epoch seconds: a datetime as given, a number or timedelta as seconds from now."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.timestamp()
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    return (now if now is not None else time.time()) + seconds


def inline_request(name: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Request:
    return Request(id=new_id(), task=name, args=list(args), kwargs=dict(kwargs), is_eager=True)
