"""The tasks every app has: those behind `task.map`, `task.starmap`, `task.chunks` and
`tolerant_map`, the one that ends a group something waits for, and the one that fails a
chord's callback when a member of its header failed."""

from __future__ import annotations

import traceback
from typing import TYPE_CHECKING, Any

import anyio

from taskq.elements import (
    CHORD_ERROR_TASK,
    GROUP_RESULTS_TASK,
    MAP_TASK,
    STARMAP_TASK,
    TOLERANT_MAP_TASK,
)
from taskq.errors import ChordError, TaskError, task_error_type
from taskq.stores.base import exception_type

if TYPE_CHECKING:
    from taskq.app import TaskQ


BUILTIN_TASKS = frozenset(
    {MAP_TASK, STARMAP_TASK, TOLERANT_MAP_TASK, CHORD_ERROR_TASK, GROUP_RESULTS_TASK}
)


def register_builtins(app: TaskQ) -> None:
    @app.task(name=MAP_TASK)
    async def run_map(task: str, items: list[Any]) -> list[Any]:
        return [await _call(app, task, [item]) for item in items]

    @app.task(name=STARMAP_TASK)
    async def run_starmap(task: str, items: list[list[Any]]) -> list[Any]:
        return [await _call(app, task, item) for item in items]

    @app.task(name=TOLERANT_MAP_TASK)
    async def run_tolerant_map(
        task: str,
        items: list[Any],
        args: list[Any],
        kwargs: dict[str, Any],
        max_retries: int,
        countdown: float,
    ) -> list[Any]:
        return [
            await _settled(app, task, [item, *args], kwargs, max_retries, countdown)
            for item in items
        ]

    @app.task(name=GROUP_RESULTS_TASK)
    async def group_results(results: list[Any]) -> list[Any]:
        """The results of the group it follows, for what waits for the group: its links,
        the chord it is a member of."""
        return results

    @app.task(name=CHORD_ERROR_TASK)
    async def chord_error(failure: dict[str, Any]) -> None:
        raise ChordError.of_member(failure["index"], failure["id"], failure["reason"])


async def _call(
    app: TaskQ, name: str, args: list[Any], kwargs: dict[str, Any] | None = None
) -> Any:
    task = app.get_task(name)
    if task.is_coroutine:
        return await task(*args, **(kwargs or {}))
    return await anyio.to_thread.run_sync(lambda: task(*args, **(kwargs or {})))


async def _settled(
    app: TaskQ,
    name: str,
    args: list[Any],
    kwargs: dict[str, Any],
    max_retries: int,
    countdown: float,
) -> Any:
    """The call's value, or after `max_retries` retries its last error, as a `TaskError`."""
    retries = 0
    while True:
        try:
            return await _call(app, name, args, kwargs)
        except Exception as exc:
            if retries == max_retries:
                return _as_task_error(exc)
        retries += 1
        await anyio.sleep(countdown)


def _as_task_error(exc: Exception) -> TaskError:
    text = "".join(traceback.format_exception(exc))
    return task_error_type(exception_type(exc))(str(exc), text)
