"""Canvas: signatures, chain, group, chord, chunks and map.

A workflow is a tree of elements, each a JSON dict (DESIGN.md "A signature is ..."):
a task signature `{"task", "args", "kwargs", "options", "immutable"}`, or a composite
with `"subtask_type"` chain, group or chord. Publishing a workflow freezes it (every
task gets its id up front, so results are known before anything runs), turns it into
the messages that can start now, and sends them in one `publish_many`. The rest
travels in the envelope: `chain` (what runs after this task, with its result
prepended), `group_id`/`group_index`/`group_size` and `chord` (the callback of the
group this task ends), `callbacks`/`errbacks` (link, link_error). Workers advance it
(`taskq.workflow`), so it completes after the producer has gone.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Coroutine, Iterable, Iterator, Mapping, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any, Generic, TypeVar, Unpack, overload

from taskq.elements import (
    CHAIN,
    CHORD,
    GROUP,
    MAP_TASK,
    STARMAP_TASK,
    Element,
    freeze,
    kind_of,
    members,
    new_id,
)
from taskq.options import CallOptions, check_call
from taskq.result import AsyncResult, GroupResult
from taskq.workflow import launch

if TYPE_CHECKING:
    from taskq.app import TaskQ
    from taskq.task import Task

R = TypeVar("R")


class Signature(Generic[R]):
    """A task call that has not been made: `add.s(2, 2)`, `signature("shop.resize", [...])`."""

    def __init__(
        self,
        task: str | Task[Any, R],
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        options: Mapping[str, Any] | None = None,
        immutable: bool = False,
        app: TaskQ | None = None,
    ) -> None:
        self.task = task if isinstance(task, str) else task.name
        self.app = app if app is not None or isinstance(task, str) else task.app
        self.args = list(args)
        self.kwargs = dict(kwargs or {})
        self.options = dict(options or {})
        self.immutable = immutable
        check_call(self.task, self.options, kind="signature")

    def __repr__(self) -> str:
        arguments = [repr(a) for a in self.args] + [f"{k}={v!r}" for k, v in self.kwargs.items()]
        return f"{self.task}({', '.join(arguments)})"

    def set(self, **options: Any) -> Signature[R]:
        """A copy with these call options (queue, countdown, priority, ...)."""
        check_call(self.task, options, kind="signature")
        clone = copy.copy(self)
        clone.options = {**self.options, **options}
        return clone

    def link(self, callback: Signature[Any]) -> Signature[Any]:
        """Run `callback` with this task's result when it succeeds."""
        self.options.setdefault("link", []).append(callback)
        return callback

    def link_error(self, errback: Signature[Any]) -> Signature[Any]:
        """Run `errback` with (task id, error) when this task fails."""
        self.options.setdefault("link_error", []).append(errback)
        return errback

    def on_error(self, errback: Signature[Any]) -> Signature[R]:
        """`link_error` that returns this signature, for chaining calls."""
        self.link_error(errback)
        return self

    def __or__(self, other: Signature[Any]) -> chain:
        return chain(self, other)

    @property
    def id(self) -> str | None:
        """The task id this signature will run under (None before `freeze()`)."""
        task_id: str | None = self.options.get("task_id")
        return task_id

    def freeze(self) -> Any:
        """Give this signature (every task of a workflow) its id now, before publishing,
        and return the handle of its result (`AsyncResult`, or `GroupResult` for a group)."""
        self._freeze_ids()
        return result_of(self._app(), freeze(self.to_dict()))

    def _freeze_ids(self) -> None:
        self.options.setdefault("task_id", new_id())

    def __call__(self, *args: Any, **kwargs: Any) -> Coroutine[Any, Any, Any]:
        """`await sig(*args, **kwargs)`: `apply_async(args, kwargs)`."""
        return self.apply_async(args, kwargs)

    def to_dict(self) -> Element:
        options = {
            key: value for key, value in self.options.items() if key not in ("link", "link_error")
        }
        for key in ("link", "link_error"):
            if self.options.get(key):
                options[key] = [callback.to_dict() for callback in self.options[key]]
        return {
            "task": self.task,
            "args": self.args,
            "kwargs": self.kwargs,
            "options": options,
            "immutable": self.immutable,
        }

    async def delay(self, *args: Any, **kwargs: Any) -> Any:
        return await self.apply_async(args, kwargs)

    async def apply_async(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> Any:
        """Publish the workflow: args are prepended, kwargs merged, options override
        (`publish_timeout` bounds this publish, as with `Task.apply_async`)."""
        check_call(self.task, options)
        app = self._app()
        publish_timeout = options.pop("publish_timeout", None)
        element = freeze(self.to_dict())
        for key in ("link", "link_error"):  # on the whole workflow, as the signature's own
            added = [link.to_dict() for link in as_signatures(options.pop(key, None))]
            if added:
                element["options"][key] = [*element["options"].get(key, []), *added]
        _merge_call(element, list(args or ()), dict(kwargs or {}), options)
        await launch(app, element, send=partial(app.send_messages, publish_timeout=publish_timeout))
        return result_of(app, element)

    def _app(self) -> TaskQ:
        if self.app is None:
            raise ValueError(
                f"signature {self!r} has no app: build it with signature(..., app=app)"
            )
        return self.app


def signature(
    task: str | Task[Any, Any],
    args: Sequence[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
    *,
    app: TaskQ | None = None,
    immutable: bool = False,
    **options: Unpack[CallOptions],
) -> Signature[Any]:
    """A signature by task name (no need to import the function) or by task."""
    return Signature(task, args, kwargs, dict(options), immutable, app)


class _Composite(Signature[Any]):
    kind: str

    def __init__(self, tasks: Iterable[object], **extra: Any) -> None:
        self.tasks = [_signature_in(self.kind, task) for task in tasks]
        app = next((t.app for t in self.tasks if t.app is not None), extra.pop("app", None))
        super().__init__(f"taskq.{self.kind}", app=app)

    @property
    def id(self) -> str | None:
        """The id of the task whose result is the workflow's (None before `freeze()`)."""
        return self.tasks[-1].id if self.tasks else None

    def _freeze_ids(self) -> None:
        for task in self.tasks:
            task._freeze_ids()

    def to_dict(self) -> Element:
        element = super().to_dict()
        element.update(subtask_type=self.kind, kwargs={"tasks": [t.to_dict() for t in self.tasks]})
        return element


class chain(_Composite):
    """Run tasks one after another, each getting the previous result as its first argument.
    A task stands for its signature with no arguments: `chain(add.s(1, 1), notify)`."""

    kind = CHAIN

    def __init__(self, *tasks: Signature[Any] | Task[Any, Any]) -> None:
        signatures = [_as_signature(task) for task in tasks]
        flat = itertools.chain.from_iterable(
            t.tasks if isinstance(t, chain) and not t.options else [t] for t in signatures
        )
        super().__init__(flat)

    def __or__(self, other: Signature[Any]) -> chain:
        return chain(self, other)

    def set(self, **options: Any) -> chain:
        """A copy whose first task has these call options (where the chain starts)."""
        clone = copy.copy(self)
        clone.tasks = [self.tasks[0].set(**options), *self.tasks[1:]]
        return clone


class group(_Composite):
    """Run tasks in parallel; `apply_async()` returns a `GroupResult` in submission order."""

    kind = GROUP

    def __init__(self, *tasks: Signature[Any] | Iterable[Signature[Any]]) -> None:
        if len(tasks) == 1 and not isinstance(tasks[0], Signature):
            if not isinstance(tasks[0], Iterable):
                raise TypeError(_not_a_signature(GROUP, tasks[0]))
            tasks = tuple(tasks[0])
        # A group directly in a group (a chord's header too) is unrolled into it, as Celery
        # does: its results are the outer group's, not a nested list.
        flat = itertools.chain.from_iterable(
            t.tasks if isinstance(t, group) and not t.options else [t] for t in tasks
        )
        super().__init__(flat)

    @property
    def id(self) -> str | None:
        """The group's id (None before `freeze()`)."""
        group_id: str | None = self.options.get("group_id")
        return group_id

    def _freeze_ids(self) -> None:
        self.options.setdefault("group_id", new_id())
        super()._freeze_ids()

    def set(self, **options: Any) -> group:
        """A copy whose tasks each have these call options."""
        clone = copy.copy(self)
        clone.tasks = [task.set(**options) for task in self.tasks]
        return clone

    def skew(self, start: float = 1.0, stop: float | None = None, step: float = 1.0) -> group:
        """Spread the tasks' countdowns: `start`, `start + step`, ... up to `stop`, the last
        one repeated after it (as Celery's). Changes this group; returns it."""
        if step <= 0 or (stop is not None and stop < start):
            raise ValueError(f"skew({start}, {stop}, {step}): step must be > 0 and stop >= start")
        countdowns = _spread(start, stop, step)
        self.tasks = [task.set(countdown=next(countdowns)) for task in self.tasks]
        return self


class chord(Signature[Any]):
    """A group whose results, in order, are passed to `body` once all have finished."""

    def __init__(
        self, header: group | Iterable[Signature[Any]], body: Signature[Any] | None = None
    ) -> None:
        self.header = header if isinstance(header, group) else group(list(header))
        if self.header.options.get("link") or self.header.options.get("link_error"):
            raise ValueError("a chord's header has no links of its own: link the chord (its body)")
        self.body = body
        super().__init__("taskq.chord", app=self.header.app or (body.app if body else None))

    @overload
    def __call__(self, body: Signature[Any]) -> chord: ...

    @overload
    def __call__(self) -> Coroutine[Any, Any, Any]: ...

    def __call__(self, body: Signature[Any] | None = None) -> chord | Coroutine[Any, Any, Any]:
        """`chord(header)(callback)`, Celery's other spelling; `await chord(header, body)()`
        publishes it."""
        return self.apply_async() if body is None else chord(self.header, body)

    @property
    def id(self) -> str | None:
        """The body's task id, whose result is the chord's (None before `freeze()`)."""
        return self.body.id if self.body is not None else None

    def _freeze_ids(self) -> None:
        self.header._freeze_ids()
        self._need_body()._freeze_ids()

    def set(self, **options: Any) -> chord:
        """A copy whose header's tasks each have these call options."""
        clone = copy.copy(self)
        clone.header = self.header.set(**options)
        return clone

    def to_dict(self) -> Element:
        element = super().to_dict()
        element.update(
            subtask_type=CHORD,
            kwargs={"header": self.header.to_dict(), "body": self._need_body().to_dict()},
        )
        return element

    def _need_body(self) -> Signature[Any]:
        if self.body is None:
            raise ValueError("a chord needs a body: chord(header, body) or chord(header)(body)")
        return self.body


def _spread(start: float, stop: float | None, step: float) -> Iterator[float]:
    countdown = start
    while stop is None or countdown <= stop:
        yield countdown
        countdown += step
    while True:
        yield countdown - step


def _as_signature(task: object) -> object:
    """A task as its signature with no arguments (where a chain takes one)."""
    from taskq.task import Task  # task.py imports this module

    return task.s() if isinstance(task, Task) else task


def _signature_in(kind: str, task: object) -> Signature[Any]:
    if not isinstance(task, Signature):
        raise TypeError(_not_a_signature(kind, task))
    return task


def _not_a_signature(kind: str, task: object) -> str:
    name = getattr(task, "name", None)
    hint = f": use {name}.s(...)" if isinstance(name, str) else ""
    return f"{kind}() takes signatures, not {task!r}{hint}"


def as_signatures(value: Signature[Any] | Sequence[Signature[Any]] | None) -> list[Signature[Any]]:
    """`link=` and `link_error=` values as a list: one signature, several, or none."""
    if value is None:
        return []
    return [value] if isinstance(value, Signature) else list(value)


class chunks(group):
    """`items` (argument tuples) split into messages of `size` calls each, as a group of
    lists: `add.chunks(zip(xs, ys), 100)`."""

    def __init__(self, task: Task[Any, Any], items: Iterable[Sequence[Any]], size: int) -> None:
        if size < 1:
            raise ValueError("chunk size must be at least 1")
        rows = [list(item) for item in items]
        parts = [rows[i : i + size] for i in range(0, len(rows), size)]
        super().__init__(starmap(task, part) for part in parts)

    def group(self) -> group:
        """The same messages as a plain group (Celery's `chunks(...).group()`), to `skew`."""
        return group(self.tasks)


def xmap(task: Task[Any, Any], items: Iterable[Any]) -> Signature[list[Any]]:
    """One message that calls `task(item)` for each item; the result is the list."""
    return Signature(MAP_TASK, kwargs={"task": task.name, "items": list(items)}, app=task.app)


def starmap(task: Task[Any, Any], items: Iterable[Sequence[Any]]) -> Signature[list[Any]]:
    """One message that calls `task(*item)` for each item; the result is the list."""
    rows = [list(item) for item in items]
    return Signature(STARMAP_TASK, kwargs={"task": task.name, "items": rows}, app=task.app)


# -- elements (dicts) ------------------------------------------------------------------


def result_of(app: TaskQ, element: Element, parent: AsyncResult[Any] | None = None) -> Any:
    """The handle of a frozen tree's outcome: AsyncResult of its last task, or GroupResult."""
    kind = kind_of(element)
    if kind == CHORD:
        return result_of(app, element["kwargs"]["body"], parent)
    if kind == CHAIN:
        handle = parent
        for member in members(element):
            handle = result_of(app, member, handle)
        return handle
    if kind == GROUP:
        results = [result_of(app, member) for member in members(element)]
        return GroupResult(element["options"]["group_id"], results, app=app)
    result: AsyncResult[Any] = AsyncResult(element["options"]["task_id"], app=app)
    result.parent = parent
    return result


def _merge_call(
    element: Element, args: list[Any], kwargs: dict[str, Any], options: dict[str, Any]
) -> None:
    """Apply `apply_async`'s arguments to the element that starts the workflow."""
    kind = kind_of(element)
    if kind == CHAIN:
        _merge_call(members(element)[0], args, kwargs, options)
    elif kind == CHORD:
        _merge_call(element["kwargs"]["header"], args, kwargs, options)
    elif kind == GROUP:
        for member in members(element):
            _merge_call(member, args, kwargs, options)
    else:
        element["args"] = args + element["args"]
        element["kwargs"] = {**element["kwargs"], **kwargs}
        element["options"].update(options)
