"""`task_routes`: exact names, glob patterns and callables -> queue / priority / options.

A route table is a mapping `{name_or_glob: "queue" | {"queue": ..., "priority": ...}}`,
a callable `(name, args, kwargs, options) -> dict | str | None`, or a list of these
tried in order. Exact names win over globs; globs match in insertion order.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from taskq.errors import ConfigurationError

if TYPE_CHECKING:
    from taskq.app import TaskQ

Route = dict[str, Any]
_GLOB_CHARS = re.compile(r"[*?\[]")


class Router:
    def __init__(self, routes: Any) -> None:
        self._routes: list[Mapping[str, Any] | Callable[..., Any]] = _as_list(routes)
        self._globs = [
            [
                (re.compile(fnmatch.translate(p)), r)
                for p, r in table.items()
                if _GLOB_CHARS.search(p)
            ]
            if isinstance(table, Mapping)
            else []
            for table in self._routes
        ]

    def route(
        self, name: str, args: Sequence[Any], kwargs: Mapping[str, Any], options: Mapping[str, Any]
    ) -> Route:
        """The first matching route for task `name`, as a dict ({} when none matches)."""
        for table, globs in zip(self._routes, self._globs, strict=True):
            if isinstance(table, Mapping):
                found = table.get(name)
                if found is None:
                    found = next((r for pattern, r in globs if pattern.match(name)), None)
            else:
                found = table(name, args, kwargs, options)
            if found is not None:
                return _as_route(found, name)
        return {}


def snapshot(routes: Any) -> Any:
    """A copy of `routes` to compare later ones with: its dicts and lists copied, everything
    else (callables, strings) shared, so that nothing is deep-copied that cannot be."""
    if isinstance(routes, Mapping):
        return {key: snapshot(value) for key, value in routes.items()}
    if isinstance(routes, list | tuple):
        return type(routes)(snapshot(item) for item in routes)
    return routes


def _as_list(routes: Any) -> list[Mapping[str, Any] | Callable[..., Any]]:
    if routes is None:
        return []
    items = list(routes) if isinstance(routes, list | tuple) else [routes]
    for item in items:
        if not isinstance(item, Mapping) and not callable(item):
            raise ConfigurationError(
                f"task_routes entry {item!r} is neither a mapping nor callable"
            )
    return items


def _as_route(found: Any, name: str) -> Route:
    if isinstance(found, str):
        return {"queue": found}
    if isinstance(found, Mapping):
        return dict(found)
    raise ConfigurationError(f"route for {name!r} is {found!r}: expected a queue name or a dict")


def known_queues(app: TaskQ) -> list[str]:
    """The default queue, `task_queues`, and every queue named by a task or a static route."""
    names = [app.conf.task_default_queue, *app.conf.task_queues]
    names += [task.queue for task in app.tasks.values() if task.queue]
    routes = app.conf.task_routes
    for table in routes if isinstance(routes, list | tuple) else [routes]:
        if isinstance(table, dict):
            names += [r if isinstance(r, str) else r.get("queue") for r in table.values()]
    return sorted({name for name in names if isinstance(name, str)})
