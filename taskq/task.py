"""Task: a registered function with its options, and the request context it runs in."""

from __future__ import annotations

import hashlib
import inspect
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextvars import ContextVar
from datetime import datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, Any, Generic, NoReturn, ParamSpec, TypeVar, Unpack

import anyio
import orjson

from taskq import sync, typed_json
from taskq.canvas import Signature, chunks, group, starmap, xmap
from taskq.errors import ConfigurationError, MaxRetriesExceededError, Replace, Retry
from taskq.message import Message
from taskq.options import CallOptions, check_call
from taskq.result import AsyncResult, EagerResult
from taskq.sync import SyncResult
from taskq.workflow import add_to_chord

if TYPE_CHECKING:
    from taskq.app import TaskQ
    from taskq.workflow import Advancing

P = ParamSpec("P")
R = TypeVar("R")


class Request:
    """What a running task knows about its own invocation (`self.request` in a bound task):
    its message's fields (`id`, `task`, `args`, `kwargs`, `retries`, `root_id`, `parent_id`,
    `group_id`, `group_index`, `eta`, `expires`, `headers`, `time_limit`, `soft_time_limit`),
    read from the message itself (`properties` too, in Celery's shape), where it runs
    (`delivery_info`, `hostname`), and the ids of the tasks it published while it ran
    (`children`)."""

    __slots__ = (
        "additions",
        "advancing",
        "children",
        "default_exchange",
        "delivery_count",
        "hostname",
        "is_eager",
        "message",
        "queue",
        "retries_exhausted",
    )

    def __init__(
        self,
        message: Message,
        hostname: str | None = None,
        queue: str | None = None,
        delivery_count: int = 1,
        default_exchange: str = "",
        *,
        is_eager: bool = False,
    ) -> None:
        self.message = message
        self.hostname = hostname
        self.queue = queue if queue is not None else message.queue  # the one it came from
        self.delivery_count = delivery_count
        self.default_exchange = default_exchange
        self.is_eager = is_eager
        self.retries_exhausted = False
        self.children: list[str] = []
        # What runs the task's workflow steps (set by the pipeline's workflow stage for a
        # task of a workflow), and how many members its code added to its chord.
        self.advancing: Advancing | None = None
        self.additions = 0

    @property
    def id(self) -> str:
        return self.message.id

    @property
    def task(self) -> str:
        return self.message.task

    @property
    def args(self) -> list[Any]:
        return self.message.args

    @property
    def kwargs(self) -> dict[str, Any]:
        return self.message.kwargs

    @property
    def retries(self) -> int:
        return self.message.retries

    @property
    def root_id(self) -> str | None:
        return self.message.root_id

    @property
    def parent_id(self) -> str | None:
        return self.message.parent_id

    @property
    def group_id(self) -> str | None:
        return self.message.group_id

    @property
    def group_index(self) -> int | None:
        return self.message.group_index

    @property
    def eta(self) -> float | None:
        return self.message.eta

    @property
    def expires(self) -> float | None:
        return self.message.expires

    @property
    def headers(self) -> dict[str, Any]:
        return self.message.headers

    @property
    def time_limit(self) -> float | None:
        return self.message.time_limit

    @property
    def soft_time_limit(self) -> float | None:
        return self.message.soft_time_limit

    @property
    def delivery_info(self) -> dict[str, Any]:
        """Celery's keys (`exchange`, `routing_key` — the queue's name unless the call routed
        it by another —, `priority`, `redelivered`) and taskq's `queue` (the one it was
        consumed from) and `delivery_count`. Built when asked for: most tasks never do."""
        message = self.message
        return {
            "exchange": message.exchange or self.default_exchange,
            "routing_key": message.routing_key or self.queue,
            "priority": message.priority,
            "redelivered": self.delivery_count > 1,
            "queue": self.queue,
            "delivery_count": self.delivery_count,
        }

    @property
    def properties(self) -> dict[str, Any]:
        """The message's properties, in Celery's shape."""
        message = self.message
        return {
            "correlation_id": message.id,
            "content_type": message.content_type,
            "priority": message.priority,
            "delivery_info": self.delivery_info,
        }


_current_request: ContextVar[Request | None] = ContextVar("taskq_request", default=None)


def current_request() -> Request | None:
    """The request of the task running in this context, if any."""
    return _current_request.get()


class Task(Generic[P, R]):
    """A function registered with `@app.task`, or a class-based task: a subclass with a `run`
    method and options as class attributes, registered with `app.register_task`.

    `await task.delay(...)` / `await task.apply_async(...)` publish it (`delay_sync` /
    `apply_async_sync` from synchronous code); calling the task directly runs the function
    inline, with no broker.
    """

    def __init__(
        self,
        app: TaskQ | None = None,
        fn: Callable[..., Any] | None = None,
        name: str | None = None,
        bind: bool = False,
        **options: Any,
    ) -> None:
        if app is None and fn is None and name is None and not bind and not options:
            return  # a class-based task's instance: `app.register_task` completes it
        if app is None or fn is None or name is None:
            raise TypeError("Task(app, fn, name, ...) needs all three")
        self.app = app
        self.fn = fn
        self.name = name
        self.bind = bind
        self.is_coroutine = inspect.iscoroutinefunction(fn)
        self.parameters = inspect.signature(fn)  # the function's, to check call arguments
        self._declared = options
        self.configure()
        self._plain_arity = _plain_arity(self.parameters, bind)
        self.has_hooks = any(
            getattr(type(self), hook) is not getattr(Task, hook)
            for hook in ("on_success", "on_failure", "on_retry", "after_return")
        )
        self.__doc__ = fn.__doc__
        self.__wrapped__ = fn

    def configure(self) -> None:
        """Set the task's options: those it was declared with, under the app's
        `task_annotations` for it (which win, as in Celery)."""
        annotations = self.app.conf.annotations_for(self.name)
        if annotations:
            try:
                self.app.options.task_settings(self.name, annotations)
            except (TypeError, ValueError, ConfigurationError) as exc:
                raise ConfigurationError(f"task_annotations: {exc}") from None
        settings = self.app.options.task_settings(self.name, {**self._declared, **annotations})
        self.queue: str | None = settings.pop("queue")
        self.priority: int | None = settings.pop("priority")
        self.ignore_result: bool | None = settings.pop("ignore_result")
        self.max_retries: int | None = settings.pop("max_retries")
        self.default_retry_delay: float = settings.pop("default_retry_delay")
        self.autoretry_for = _exception_types(settings.pop("autoretry_for"))
        self.dont_autoretry_for = _exception_types(settings.pop("dont_autoretry_for"))
        self.retry_backoff: bool | float = settings.pop("retry_backoff")
        self.retry_backoff_max: float = settings.pop("retry_backoff_max")
        self.retry_jitter: bool = settings.pop("retry_jitter")
        self.acks_late: bool | None = settings.pop("acks_late")
        self.reject_on_worker_lost: bool | None = settings.pop("reject_on_worker_lost")
        self.track_started: bool | None = settings.pop("track_started")
        self.time_limit: float | None = settings.pop("time_limit")
        self.soft_time_limit: float | None = settings.pop("soft_time_limit")
        self.rate_limit: str | None = settings.pop("rate_limit")
        self.rate_limit_scope: str = settings.pop("rate_limit_scope")
        self.expires: float | timedelta | datetime | None = settings.pop("expires")
        self.serializer: str | None = settings.pop("serializer")
        self.compression: str | None = settings.pop("compression")
        self.unique_for: float | None = settings.pop("unique_for")
        self.typing: bool = settings.pop("typing")
        self.pool: str | None = settings.pop("pool")
        if self.pool == "process" and self.is_coroutine:
            raise TypeError(
                f"task {self.name!r}: pool='process' is for plain functions, not async ones"
            )
        self.options: dict[str, Any] = settings  # the options middleware declared

    def __repr__(self) -> str:
        return f"<Task {self.name}>"

    @property
    def request(self) -> Request:
        """The request of the current invocation of this task."""
        request = _current_request.get()
        if request is None or request.task != self.name:
            return Request(Message(id="", task=self.name), is_eager=True)
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
        **options: Unpack[CallOptions],
    ) -> AsyncResult[R]:
        """Publish with explicit options; they win over the task's, which win over routes.

        Options (`taskq.options.CallOptions`): task_id, queue, priority, countdown, eta,
        expires, headers, serializer, time_limit, soft_time_limit, idempotency_key,
        ignore_result, and `link` / `link_error` signatures, run with the result / with
        (task id, error) afterwards. An unknown option is a `TypeError`, and so are arguments
        that do not fit the function's signature (unless the task has `typing=False`).
        """
        self._complete(options)
        if self.typing:
            self._check_arguments(args or (), kwargs or {})
        if self.unique_for is not None and options.get("idempotency_key") is None:
            options["idempotency_key"] = unique_key(self.name, args, kwargs)
        return await self.app.send_task(self.name, args, kwargs, **options)

    def delay_sync(self, *args: P.args, **kwargs: P.kwargs) -> SyncResult[R]:
        """`delay()` for synchronous code (a Django or Flask view, a script): blocks until the
        message is published; see `taskq.sync`."""
        work = partial(self.delay, *args, **kwargs)
        return SyncResult(sync.run(work, f"{self.name}.delay_sync()", f"{self.name}.delay()"))

    def apply_async_sync(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Unpack[CallOptions],
    ) -> SyncResult[R]:
        """`apply_async()` for synchronous code, with the same options; see `taskq.sync`."""
        work = partial(self.apply_async, args, kwargs, **options)
        call, awaited = f"{self.name}.apply_async_sync()", f"{self.name}.apply_async()"
        return SyncResult(sync.run(work, call, awaited))

    async def apply(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Unpack[CallOptions],
    ) -> EagerResult[R]:
        """Run the task here and now (Celery's local execution), through the pipeline a
        worker runs it through: middleware, hooks, retries (inline, without waiting for their
        countdown), time limits and workflow steps (which run here too). Its states are
        stored as a worker's would be; the result holds the final one."""
        self._complete(options)
        message = self.app.build_message(self.name, args, kwargs, **options)
        [result] = await self.app.run_eagerly([message])
        return result

    def _complete(self, options: CallOptions) -> None:
        """Check a call's options, and fill in the task's own where the call gives none."""
        check_call(self.name, options)
        for name in self.app.options.inherited:
            if options.get(name) is None:
                options[name] = getattr(self, name)  # type: ignore[literal-required]

    def s(self, *args: Any, **kwargs: Any) -> Signature[R]:
        """A signature of this task: `add.s(2, 2)`; in a chain it gets the previous result first."""
        return Signature(self, args, kwargs)

    def signature(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        *,
        immutable: bool = False,
        **options: Unpack[CallOptions],
    ) -> Signature[R]:
        """A signature with call options, Celery's `add.signature((2, 2), countdown=10)`."""
        return Signature(self, args or (), kwargs, dict(options), immutable)

    def si(self, *args: Any, **kwargs: Any) -> Signature[R]:
        """An immutable signature: in a chain it ignores the previous result."""
        return Signature(self, args, kwargs, immutable=True)

    def map(self, items: Iterable[Any]) -> Signature[list[R]]:
        """One message calling this task on each item: `double.map([1, 2, 3])`."""
        return xmap(self, items)

    def starmap(self, items: Iterable[Sequence[Any]]) -> Signature[list[R]]:
        """One message calling this task with each argument tuple."""
        return starmap(self, items)

    def chunks(self, items: Iterable[Sequence[Any]], size: int) -> group:
        """Calls with each argument tuple, `size` per message, as a group of lists."""
        return chunks(self, items, size)

    def retry(
        self,
        exc: BaseException | None = None,
        countdown: float | None = None,
        max_retries: int | None = None,
        *,
        eta: datetime | float | None = None,
        expires: float | timedelta | datetime | None = None,
    ) -> Retry:
        """Ask the worker to run this task again later: `raise self.retry(exc=exc, countdown=5)`.

        Due after `countdown` seconds (`default_retry_delay` by default) or at `eta` (a datetime
        or epoch seconds, not both); `expires` (seconds from now or a datetime) revokes the
        retry if it has not started by then, instead of the call's own expiry. Past
        `max_retries` (this call's, else the task's), raises `exc` (or
        `MaxRetriesExceededError` without one) instead.
        """
        if countdown is not None and eta is not None:
            raise ValueError("give countdown or eta, not both")
        request = self.request
        limit = max_retries if max_retries is not None else self.max_retries
        if limit is not None and request.retries >= limit:
            request.retries_exhausted = True
            if exc is not None:
                raise exc
            raise MaxRetriesExceededError(
                f"{self.name}[{request.id}]: max retries ({limit}) exceeded"
            )
        due = eta.timestamp() if isinstance(eta, datetime) else eta
        if due is None and countdown is None:
            countdown = self.default_retry_delay
        raise Retry(exc, countdown, eta=due, expires=absolute_time(expires))

    def replace(self, sig: Signature[Any]) -> NoReturn:
        """End this running task by putting `sig` (a task or a workflow) in its place:
        `return self.replace(sig)` in a bound task. Its result becomes this task's (a
        group's as the list), in chains and chord headers alike; the rest of this task's
        chain, its chord and its links continue after it."""
        if not isinstance(sig, Signature):
            raise TypeError(f"{self.name}.replace() takes a signature, not {sig!r}")
        if not self.request.id:
            raise RuntimeError(f"{self.name}.replace() is for the task while it runs (bind=True)")
        raise Replace(sig.to_dict())

    async def add_to_chord(self, sig: Signature[Any]) -> AsyncResult[Any]:
        """Publish `sig` (a task or a workflow) as one more member of the chord this running
        task is a member of (`await self.add_to_chord(sig)` in a bound task): the chord's
        callback waits for it too and gets its result after the other members' results, in
        the order they were added. `ValueError` for a task that is not a chord's member."""
        return await self._add_to_chord(self._growing_request("add_to_chord", sig), sig)

    def add_to_chord_sync(self, sig: Signature[Any]) -> SyncResult[Any]:
        """`add_to_chord()` for a plain-function task (it runs in a worker thread): the member
        is added by the worker's event loop, and this returns once it is published."""
        request = self._growing_request("add_to_chord_sync", sig)
        return SyncResult(anyio.from_thread.run(self._add_to_chord, request, sig))

    def _growing_request(self, call: str, sig: Signature[Any]) -> Request:
        """The request of this running chord member; else a clear error."""
        if not isinstance(sig, Signature):
            raise TypeError(f"{self.name}.{call}() takes a signature, not {sig!r}")
        request = self.request
        message = request.message
        if message.chord is None or message.group_id is None:
            raise ValueError(
                f"{self.name}.{call}(): task {message.id or self.name} is not running "
                "as a member of a chord (a bound task in a chord's header)"
            )
        if request.advancing is None:
            raise RuntimeError(
                f"{self.name}.{call}() is not available in a process of the pool "
                "(pool='process'): the worker's event loop, which grows the chord, is not there"
            )
        return request

    @staticmethod
    async def _add_to_chord(request: Request, sig: Signature[Any]) -> AsyncResult[Any]:
        message = request.message
        assert request.advancing is not None
        # The same call of the same run gets the same token, so a redelivery adds nothing new.
        token = f"{message.id}:{message.retries}:{request.additions}"
        request.additions += 1
        return await add_to_chord(request.advancing, message, token, sig.to_dict())

    def retry_countdown(self, retries: int) -> float:
        """The delay before retry number `retries + 1` of an automatic retry."""
        if not self.retry_backoff:
            return self.default_retry_delay
        factor = 1.0 if self.retry_backoff is True else float(self.retry_backoff)
        countdown = min(factor * 2**retries, self.retry_backoff_max)
        return random.uniform(0, countdown) if self.retry_jitter else countdown

    def autoretries(self, exc: BaseException) -> bool:
        return isinstance(exc, self.autoretry_for) and not isinstance(exc, self.dont_autoretry_for)

    # Hooks: override in a subclass given as `@app.task(base=MyTask)`; each may be async.

    def on_success(self, retval: Any, task_id: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
        """After the task succeeded."""

    def on_failure(
        self, exc: BaseException, task_id: str, args: list[Any], kwargs: dict[str, Any], einfo: str
    ) -> Any:
        """After the task failed for good (`einfo` is the traceback text)."""

    def on_retry(
        self, exc: BaseException, task_id: str, args: list[Any], kwargs: dict[str, Any], einfo: str
    ) -> Any:
        """When the task is to be retried (its RETRY state is stored; the retry is published
        next)."""

    def after_return(
        self, status: str, retval: Any, task_id: str, args: list[Any], kwargs: dict[str, Any]
    ) -> Any:
        """After every run, whatever its outcome."""

    def bind_arguments(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
        """Raise TypeError when the arguments do not fit the function's signature."""
        if not kwargs and len(args) == self._plain_arity:
            return
        if self.bind:
            self.parameters.bind(self, *args, **kwargs)
        else:
            self.parameters.bind(*args, **kwargs)

    def _check_arguments(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
        """`TypeError` in the caller for arguments that do not fit (the `typing` option)."""
        try:
            self.bind_arguments(args, kwargs)
        except TypeError as exc:
            raise TypeError(
                f"{self.name}: {exc} (typing=False on the task skips this check)"
            ) from None

    async def run_async(self, request: Request) -> Any:
        """Await the coroutine function under `request`'s context."""
        token = _current_request.set(request)
        message = request.message
        try:
            return await self(*message.args, **message.kwargs)
        finally:
            _current_request.reset(token)

    def run_sync(self, request: Request) -> Any:
        """Call the plain function under `request`'s context (in a worker thread)."""
        token = _current_request.set(request)
        message = request.message
        try:
            return self(*message.args, **message.kwargs)
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


def _plain_arity(signature: inspect.Signature, bind: bool) -> int | None:
    """How many positional arguments fit a signature of plain required parameters
    (the common case, checked without `Signature.bind`); None for any other shape."""
    params = list(signature.parameters.values())[1 if bind else 0 :]
    plain = all(p.kind is p.POSITIONAL_OR_KEYWORD and p.default is p.empty for p in params)
    return len(params) if plain else None


def _exception_types(value: Any) -> tuple[type[BaseException], ...]:
    return tuple(value) if isinstance(value, tuple | list) else (value,)


def unique_key(name: str, args: Sequence[Any] | None, kwargs: Mapping[str, Any] | None) -> str:
    """The idempotency key of `unique_for`: the task name and its arguments."""
    payload = typed_json.dumps([list(args or ()), dict(kwargs or {})], orjson.OPT_SORT_KEYS)
    return f"unique:{name}:{hashlib.sha256(payload).hexdigest()}"
