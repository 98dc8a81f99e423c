"""The tasks every app has: those behind `task.map`, `task.starmap` and `task.chunks`, the
one that ends a group something waits for, and the one that fails a chord's callback when a
member of its header failed."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anyio

from taskq.elements import CHORD_ERROR_TASK, GROUP_RESULTS_TASK, MAP_TASK, STARMAP_TASK
from taskq.errors import ChordError

if TYPE_CHECKING:
    from taskq.app import TaskQ


BUILTIN_TASKS = frozenset({MAP_TASK, STARMAP_TASK, CHORD_ERROR_TASK, GROUP_RESULTS_TASK})


def register_builtins(app: TaskQ) -> None:
    @app.task(name=MAP_TASK)
    async def run_map(task: str, items: list[Any]) -> list[Any]:
        return [await _call(app, task, [item]) for item in items]

    @app.task(name=STARMAP_TASK)
    async def run_starmap(task: str, items: list[list[Any]]) -> list[Any]:
        return [await _call(app, task, item) for item in items]

    @app.task(name=GROUP_RESULTS_TASK)
    async def group_results(results: list[Any]) -> list[Any]:
        """The results of the group it follows, for what waits for the group: its links,
        the chord it is a member of."""
        return results

    @app.task(name=CHORD_ERROR_TASK)
    async def chord_error(failure: dict[str, Any]) -> None:
        raise ChordError.of_member(failure["index"], failure["id"], failure["reason"])


async def _call(app: TaskQ, name: str, args: list[Any]) -> Any:
    task = app.get_task(name)
    if task.is_coroutine:
        return await task(*args)
    return await anyio.to_thread.run_sync(lambda: task(*args))
