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
from collections.abc import Iterable, Mapping, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any, Generic, TypeVar, Unpack

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

    def __or__(self, other: Signature[Any]) -> chain:
        return chain(self, other)

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

    def __init__(self, tasks: Iterable[Signature[Any]], **extra: Any) -> None:
        self.tasks = list(tasks)
        app = next((t.app for t in self.tasks if t.app is not None), extra.pop("app", None))
        super().__init__(f"taskq.{self.kind}", app=app)

    def to_dict(self) -> Element:
        element = super().to_dict()
        element.update(subtask_type=self.kind, kwargs={"tasks": [t.to_dict() for t in self.tasks]})
        return element


class chain(_Composite):
    """Run tasks one after another, each getting the previous result as its first argument."""

    kind = CHAIN

    def __init__(self, *tasks: Signature[Any]) -> None:
        flat = itertools.chain.from_iterable(
            t.tasks if isinstance(t, chain) else [t] for t in tasks
        )
        super().__init__(flat)

    def __or__(self, other: Signature[Any]) -> chain:
        return chain(*self.tasks, other)


class group(_Composite):
    """Run tasks in parallel; `apply_async()` returns a `GroupResult` in submission order."""

    kind = GROUP

    def __init__(self, *tasks: Signature[Any] | Iterable[Signature[Any]]) -> None:
        if len(tasks) == 1 and not isinstance(tasks[0], Signature):
            tasks = tuple(tasks[0])
        super().__init__(tasks)  # type: ignore[arg-type]


class chord(Signature[Any]):
    """A group whose results, in order, are passed to `body` once all have finished."""

    def __init__(
        self, header: group | Iterable[Signature[Any]], body: Signature[Any] | None = None
    ) -> None:
        self.header = header if isinstance(header, group) else group(list(header))
        self.body = body
        super().__init__("taskq.chord", app=self.header.app or (body.app if body else None))

    def __call__(self, body: Signature[Any]) -> chord:
        """`chord(header)(callback)`, Celery's other spelling."""
        return chord(self.header, body)

    def to_dict(self) -> Element:
        if self.body is None:
            raise ValueError("a chord needs a body: chord(header, body) or chord(header)(body)")
        element = super().to_dict()
        element.update(
            subtask_type=CHORD,
            kwargs={"header": self.header.to_dict(), "body": self.body.to_dict()},
        )
        return element


def as_signatures(value: Signature[Any] | Sequence[Signature[Any]] | None) -> list[Signature[Any]]:
    """`link=` and `link_error=` values as a list: one signature, several, or none."""
    if value is None:
        return []
    return [value] if isinstance(value, Signature) else list(value)


def chunks(task: Task[Any, Any], items: Iterable[Sequence[Any]], size: int) -> group:
    """Split `items` (argument tuples) into messages of `size` calls each, as a group."""
    if size < 1:
        raise ValueError("chunk size must be at least 1")
    rows = [list(item) for item in items]
    parts = [rows[i : i + size] for i in range(0, len(rows), size)]
    return group(starmap(task, part) for part in parts)


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
