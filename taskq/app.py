"""TaskQ: the app object. Settings, the task registry, broker and store wiring, publishing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from datetime import datetime
from functools import cached_property, partial
from types import TracebackType
from typing import (
    TYPE_CHECKING,
    Any,
    Concatenate,
    Literal,
    ParamSpec,
    Protocol,
    TypeVar,
    Unpack,
    overload,
)

from taskq import defaults, sync
from taskq import result as results
from taskq.backends import Backends
from taskq.brokers.base import Broker
from taskq.builtins import BUILTIN_TASKS, register_builtins
from taskq.canvas import Signature, as_signatures
from taskq.chords import ChordCounter
from taskq.classtasks import register_task
from taskq.compression import compression_name
from taskq.config import Settings, is_timeout
from taskq.connections import LoopConnections
from taskq.control import Control
from taskq.discovery import Discovery, Packages, import_task_modules
from taskq.elements import new_id
from taskq.errors import BrokerUnavailable, NotRegisteredError
from taskq.events import Events, sent_events
from taskq.message import Message
from taskq.middleware import MiddlewareStack
from taskq.options import CallOptions, OptionTable, check_call
from taskq.routing import Router, snapshot
from taskq.stores.base import ResultStore
from taskq.task import Task as BaseTask  # `TaskQ.Task` is the class attribute
from taskq.task import absolute_time, current_request
from taskq.urls import masked_url

if TYPE_CHECKING:
    from taskq.beat.scheduler import BeatEntries

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T", bound=BaseTask[Any, Any])


class TaskDecorator(Protocol):
    @overload
    def __call__(self, fn: Callable[P, Coroutine[Any, Any, R]], /) -> BaseTask[P, R]: ...
    @overload
    def __call__(self, fn: Callable[P, R], /) -> BaseTask[P, R]: ...


class BoundTaskDecorator(Protocol):
    @overload
    def __call__(
        self, fn: Callable[Concatenate[Any, P], Coroutine[Any, Any, R]], /
    ) -> BaseTask[P, R]: ...
    @overload
    def __call__(self, fn: Callable[Concatenate[Any, P], R], /) -> BaseTask[P, R]: ...


class TaskQ:
    """The app: `TaskQ("shop", broker=..., backend=..., **settings)`.

    With no URL the embedded SQLite database `./taskq.db` is both broker and result
    store. Use `async with app:` (or `await app.connect()` / `await app.close()`);
    the first publish or result query also connects on demand.
    """

    Task = BaseTask  # the base of class-based tasks: `class Resize(app.Task)`

    def __init__(
        self,
        main: str | None = None,
        *,
        broker: str | None = None,
        backend: str | None = None,
        **settings: Any,
    ) -> None:
        self.main = main
        self.conf = Settings()
        self.conf.update(settings)
        if broker is not None:
            self.conf.broker_url = broker
        if backend is not None:
            self.conf.result_backend = backend
        self.conf.apply_environment()
        self.conf.observe(self._setting_changed)
        self.tasks: dict[str, BaseTask[Any, Any]] = {}
        self._discoveries: list[Discovery] = []
        self.options = OptionTable()
        self.middleware = MiddlewareStack(self.options)
        self.control = Control(self)
        self.events = Events(self)
        register_builtins(self)
        self._connections = LoopConnections(self._build_backends)
        self._router: Router | None = None
        self._routes_seen: Any = None  # a copy of the `task_routes` the router was built from

    @cached_property
    def beat(self) -> BeatEntries:
        """Beat's entries added at runtime; beat's code loads here, not with the app."""
        from taskq.beat.scheduler import BeatEntries

        return BeatEntries(self)

    def __repr__(self) -> str:
        return f"<TaskQ {self.main or '__main__'} broker={masked_url(self.broker_url)}>"

    # -- configuration ------------------------------------------------------------

    def config_from_object(self, obj: object | str, namespace: str | None = None) -> None:
        """`conf.config_from_object`: `app.config_from_object("django.conf:settings",
        namespace="TASKQ")` reads `TASKQ_BROKER_URL` and the other `TASKQ_` settings."""
        self.conf.config_from_object(obj, namespace)

    def autodiscover_tasks(
        self, packages: Packages, related_name: str = "tasks", force: bool = False
    ) -> None:
        """Import each package's `tasks` module (`related_name`) when a worker or beat starts,
        or now with `force`: `app.autodiscover_tasks(["proj.orders", "proj.billing"])`.
        `packages` may be a callable returning them (`lambda: settings.INSTALLED_APPS`)."""
        discovery = Discovery(packages, related_name)
        if force:
            discovery.modules()
        else:
            self._discoveries.append(discovery)

    def import_task_modules(self) -> None:
        """Import the modules that define tasks: `imports`, `include`, autodiscovered ones."""
        import_task_modules(self.conf, self._discoveries)

    def user_tasks(self) -> list[str]:
        """The names of the registered tasks that are not taskq's own."""
        return sorted(name for name in self.tasks if name not in BUILTIN_TASKS)

    def _setting_changed(self, name: str) -> None:
        if name == "task_annotations":
            for task in self.tasks.values():
                task.configure()

    @property
    def broker_url(self) -> str:
        return self.conf.broker_url or defaults.BROKER_URL

    @property
    def result_backend_url(self) -> str:
        """The store URL: as configured, else following the broker (AMQP -> SQLite)."""
        if self.conf.result_backend:
            return self.conf.result_backend
        url = self.broker_url
        return defaults.BROKER_URL if url.startswith(("amqp://", "amqps://")) else url

    @property
    def router(self) -> Router:
        """The router of the current `task_routes`, rebuilt only when they change (replaced,
        or edited in place: compared with a snapshot, which costs well under a microsecond)."""
        routes = self.conf.task_routes
        if self._router is None or routes != self._routes_seen:
            self._router, self._routes_seen = Router(routes), snapshot(routes)
        return self._router

    # -- tasks --------------------------------------------------------------------

    @overload
    def task(self, fn: Callable[P, Coroutine[Any, Any, R]], /) -> BaseTask[P, R]: ...
    @overload
    def task(self, fn: Callable[P, R], /) -> BaseTask[P, R]: ...
    @overload
    def task(
        self, fn: None = None, /, *, bind: Literal[True], name: str | None = None, **options: Any
    ) -> BoundTaskDecorator: ...
    @overload
    def task(
        self,
        fn: None = None,
        /,
        *,
        bind: Literal[False] = False,
        name: str | None = None,
        **options: Any,
    ) -> TaskDecorator: ...

    def task(
        self,
        fn: Callable[..., Any] | None = None,
        /,
        *,
        bind: bool = False,
        name: str | None = None,
        **options: Any,
    ) -> Any:
        """Register a function as a task: `@app.task` or `@app.task(name=..., bind=True, ...)`.

        `base=` names a `Task` subclass, e.g. one that overrides `on_failure`.
        """

        base: type[BaseTask[Any, Any]] = options.pop("base", BaseTask)

        def register(func: Callable[..., Any]) -> BaseTask[Any, Any]:
            task_name = name or self.default_name(func)
            task = base(self, func, task_name, bind=bind, **options)
            self.tasks[task_name] = task
            return task

        return register(fn) if fn is not None else register

    def register_task(self, task: T | type[T]) -> T:
        """Register a class-based task, `app.register_task(Resize)` or
        `app.register_task(Resize())`: a subclass of `app.Task` with a `run` method and
        options as class attributes (see `taskq.classtasks`). Returns the registered task."""
        return register_task(self, task)

    def default_name(self, fn: Callable[..., Any] | type) -> str:
        """`module.qualname` of a task's function or class (the app's main name for
        `__main__`)."""
        module = fn.__module__
        if module == "__main__" and self.main:
            module = self.main
        return f"{module}.{fn.__qualname__}"

    def get_task(self, name: str) -> BaseTask[Any, Any]:
        try:
            return self.tasks[name]
        except KeyError:
            raise NotRegisteredError(f"task {name!r} is not registered with this app") from None

    # -- connections --------------------------------------------------------------

    async def connect(self) -> None:
        """Connect the broker and the result store (idempotent). Callers that come while
        another connects wait for it, and try themselves if it failed. Connections belong to
        the running event loop: another loop (a second `asyncio.run`) connects again."""
        await self._connections.connect()

    async def close(self) -> None:
        """Close the running event loop's connections (a finishing `asyncio.run` closes them
        by itself)."""
        await self._connections.close()

    def _build_backends(self) -> Backends:
        self.conf.validate()
        return Backends.build(self.broker_url, self.result_backend_url, self.conf)

    async def __aenter__(self) -> TaskQ:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def connected_broker(self) -> Broker:
        return (await self._connections.get()).broker

    async def connected_store(self) -> ResultStore:
        return (await self._connections.get()).store

    async def chord_counter(self) -> ChordCounter | None:
        """The broker, when it counts chords itself (see `taskq.chords`); else None."""
        return (await self._connections.get()).chords

    # -- publishing ---------------------------------------------------------------

    def AsyncResult(self, task_id: str) -> results.AsyncResult[Any]:
        return results.AsyncResult(task_id, app=self)

    def SyncResult(self, task_id: str) -> sync.SyncResult[Any]:
        return sync.SyncResult(results.AsyncResult(task_id, app=self))

    def send_task_sync(
        self,
        name: str,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Unpack[CallOptions],
    ) -> sync.SyncResult[Any]:
        """`send_task()` for synchronous code, with the same options; see `taskq.sync`."""
        work = partial(self.send_task, name, args, kwargs, **options)
        return sync.SyncResult(sync.run(work, "send_task_sync()", "app.send_task()"))

    async def send_task(
        self,
        name: str,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Unpack[CallOptions],
    ) -> results.AsyncResult[Any]:
        """Publish task `name` without importing its function (options as `apply_async`).

        With an `idempotency_key`, a second publish within the key's window (the task's
        `unique_for`, else `result_expires`) returns the first one's result instead.
        """
        check_call(name, options)
        message = self.build_message(name, args, kwargs, **options)
        if options.get("broadcast") and not self.conf.task_always_eager:
            await self.control.broadcast_task(message)
            return results.AsyncResult(message.id, app=self)
        key = options.get("idempotency_key")
        if key is not None and not self.conf.task_always_eager:
            first = await self._claim_idempotency_key(key, message.id, self._key_window(name))
            if first != message.id:
                return results.AsyncResult(first, app=self)
        return await self.send_message(message, options.get("publish_timeout"))

    def build_message(
        self,
        name: str,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Unpack[CallOptions],
    ) -> Message:
        """The envelope of one call, routed: explicit options, `task_routes`, defaults."""
        args, kwargs = list(args or ()), dict(kwargs or {})
        queue, priority = options.get("queue"), options.get("priority")
        route = self.router.route(name, args, kwargs, {"queue": queue, "priority": priority})
        if priority is None:
            priority = route.get("priority", self.conf.task_default_priority)
        _check_priority(priority)
        parent = current_request()
        now = time.time()
        message_id = options.get("task_id") or new_id()
        if parent is not None:
            parent.children.append(message_id)
        headers = dict(options.get("headers") or {})
        if options.get("idempotency_key") is not None:
            headers["idempotency_key"] = options["idempotency_key"]
        return Message(
            id=message_id,
            task=name,
            args=args,
            kwargs=kwargs,
            queue=queue or route.get("queue") or self.conf.task_default_queue,
            priority=priority,
            eta=_eta(options.get("countdown"), options.get("eta"), now),
            expires=absolute_time(options.get("expires"), now),
            root_id=(parent.root_id or parent.id) if parent else message_id,
            parent_id=parent.id if parent else None,
            headers=headers,
            sent_at=now,
            time_limit=options.get("time_limit"),
            soft_time_limit=options.get("soft_time_limit"),
            exchange=route.get("exchange"),
            routing_key=route.get("routing_key"),
            ignore_result=options.get("ignore_result"),
            callbacks=_links(options.get("link")),
            errbacks=_links(options.get("link_error")),
            content_type=options.get("serializer")
            or route.get("serializer")
            or self.conf.task_serializer,
            compression=_compression(options.get("compression") or self.conf.task_compression),
        )

    async def send_messages(
        self, messages: Sequence[Message], publish_timeout: float | None = None
    ) -> None:
        """Publish many messages in one batch (one round trip where the broker allows); with
        `task_always_eager`, run them here instead."""
        if self.conf.task_always_eager:
            await self.run_eagerly(messages)
        else:
            await self.publish_messages(messages, publish_timeout)

    async def send_message(
        self, message: Message, publish_timeout: float | None = None
    ) -> results.AsyncResult[Any]:
        if self.conf.task_always_eager:
            [result] = await self.run_eagerly([message])
            return result
        await self.publish_messages([message], publish_timeout)
        return results.AsyncResult(message.id, app=self)

    async def publish_messages(
        self, messages: Sequence[Message], publish_timeout: float | None = None
    ) -> None:
        """Publish to the broker (never eagerly), with the middleware's publish hooks.

        Connecting and publishing take at most `publish_timeout` seconds (by default
        `broker_publish_timeout`; None: as long as the broker's own reconnect window), else
        `BrokerUnavailable`: whether the broker took the messages is then unknown."""
        timeout = self.conf.broker_publish_timeout if publish_timeout is None else publish_timeout
        if not is_timeout(timeout):
            raise ValueError(f"publish_timeout must be a positive number of seconds: {timeout!r}")
        for message in messages:
            await self.middleware.before_publish(message)
        deadline = asyncio.timeout(timeout)  # asyncio's: cheaper than an anyio cancel scope
        try:
            async with deadline:
                broker = await self.connected_broker()
                if self.conf.task_send_sent_event and messages:  # first: before any worker's
                    await broker.publish_events(sent_events(messages))
                await broker.publish_many([(message, message.queue) for message in messages])
        except TimeoutError:
            if not deadline.expired():
                raise
            raise BrokerUnavailable(
                f"the broker at {masked_url(self.broker_url)} took no message within "
                f"publish_timeout ({timeout:g} s)"
            ) from None
        for message in messages:
            await self.middleware.after_publish(message)

    async def run_eagerly(self, messages: Sequence[Message]) -> list[results.EagerResult[Any]]:
        """Run messages in this process, through a worker's pipeline (`Task.apply`)."""
        from taskq.execution.eager import run_eagerly  # loaded by eager use only

        return await run_eagerly(self, messages)

    async def _claim_idempotency_key(self, key: str, task_id: str, window: float) -> str:
        """The id of the task that owns `key`: `task_id` if this call claimed it."""
        store = await self.connected_store()
        name = f"idempotency:{key}"
        while not await store.set_if_absent(name, task_id.encode(), window):
            owner = await store.get_key(name)
            if owner is not None:  # else it expired between the two calls: claim again
                return owner.decode()
        return task_id

    def _key_window(self, name: str) -> float:
        task = self.tasks.get(name)
        if task is not None and task.unique_for is not None:
            return float(task.unique_for)
        return self.conf.result_expires or defaults.RESULT_EXPIRES


def _links(value: Signature[Any] | Sequence[Signature[Any]] | None) -> list[dict[str, Any]]:
    return [link.to_dict() for link in as_signatures(value)] if value is not None else []


def _eta(countdown: float | None, eta: datetime | float | None, now: float) -> float | None:
    if countdown is not None and eta is not None:
        raise ValueError("give countdown or eta, not both")
    if countdown is not None:
        return now + countdown
    if isinstance(eta, datetime):
        return eta.timestamp()
    return eta


def _compression(name: str | None) -> str | None:
    return None if name is None else compression_name(name)


def _check_priority(priority: int | None) -> None:
    if priority is not None and (type(priority) is not int or not 0 <= priority <= 9):
        raise ValueError(f"priority must be an integer 0-9, not {priority!r}")
