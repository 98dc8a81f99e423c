"""Class-based tasks: a `Task` subclass whose `run` (async or plain) is the task and whose
class attributes are its options, registered with `app.register_task(Resize)` or
`app.register_task(Resize())`:

    class Resize(app.Task):
        name = "images.resize"
        queue = "images"
        max_retries = 5

        async def run(self, path: str, size: int) -> str: ...

The options are checked as the decorator's are; a class attribute one typo away from an
option's name is a `TypeError` rather than an option quietly not set.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

from taskq.suggest import closest
from taskq.task import Task

if TYPE_CHECKING:
    from taskq.app import TaskQ

T = TypeVar("T", bound=Task[Any, Any])


def register_task(app: TaskQ, task: T | type[T]) -> T:
    """Complete a class-based task (its class, or an instance of it) for `app`, and register it."""
    instance = task() if isinstance(task, type) else task
    cls = type(instance)
    if not isinstance(instance, Task):
        raise TypeError(f"register_task takes a Task subclass or an instance of one, not {cls!r}")
    if "app" in vars(instance):
        raise TypeError(f"{instance!r} is registered with an app already")
    if not callable(getattr(instance, "run", None)):
        raise TypeError(f"{cls.__qualname__} has no run() method: it is what the task runs")
    options = _class_options(cls, {option.name for option in app.options if option.task})
    name = options.pop("name", None) or app.default_name(cls)
    Task.__init__(instance, app, instance.run, name, **options)  # type: ignore[attr-defined]
    app.tasks[name] = instance
    return instance


def _class_options(cls: type[Task[Any, Any]], known: set[str]) -> dict[str, Any]:
    """The options the subclasses of `Task` from `cls` up declare (the nearest wins)."""
    options: dict[str, Any] = {}
    names = known | {"name"}
    for klass in reversed(cls.__mro__[: cls.__mro__.index(Task)]):
        for attribute, value in vars(klass).items():
            if attribute in names:
                options[attribute] = value
            elif not attribute.startswith("_") and not callable(value):
                near = closest(attribute, names)
                if near is not None:
                    raise TypeError(
                        f"{cls.__qualname__}.{attribute}: not a task option "
                        f"(did you mean {near!r}?)"
                    )
    return options
