"""`tolerant_map`: a map whose failing items do not fail it.

    await tolerant_map(process_item.s(), items, max_retries=3).apply_async()

One message calls the task on each item in turn, as `task.map` does; an item that raises is
tried again, up to `max_retries` more times (`countdown` seconds apart), and one that kept
failing holds its error in the result: a list in item order of each item's value or its
`TaskError` (a subclass named after the exception, as `get()` raises: `except ValueError`
catches a ValueError's). The builtin task behind it is `taskq.tolerant_map` (`builtins`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeVar

from taskq.canvas import Signature
from taskq.elements import TOLERANT_MAP_TASK
from taskq.errors import TaskError

R = TypeVar("R")


def tolerant_map(
    signature: Signature[R],
    items: Iterable[Any],
    *,
    max_retries: int = 3,
    countdown: float = 0,
) -> Signature[list[R | TaskError]]:
    """A signature calling `signature`'s task with each item first (`task(item, *args,
    **kwargs)` of the signature), each retried up to `max_retries` times, `countdown`
    seconds apart; its result holds each item's value, or its error if it kept failing."""
    if type(signature) is not Signature:
        raise TypeError(f"tolerant_map takes a task's signature, not {type(signature).__name__}")
    if signature.options:
        raise TypeError(
            f"tolerant_map({signature!r}): the items run inside the map's message, so options "
            f"({', '.join(sorted(signature.options))}) go on the map: tolerant_map(...).set(...)"
        )
    if signature.immutable:
        raise TypeError(f"tolerant_map({signature!r}): an immutable signature takes no item")
    if type(max_retries) is not int or max_retries < 0:
        raise ValueError(f"max_retries must be a whole number, 0 or more, not {max_retries!r}")
    if type(countdown) not in (int, float) or countdown < 0:
        raise ValueError(f"countdown must be seconds, 0 or more, not {countdown!r}")
    arguments = {
        "task": signature.task,
        "items": list(items),
        "args": signature.args,
        "kwargs": signature.kwargs,
        "max_retries": max_retries,
        "countdown": countdown,
    }
    return Signature(TOLERANT_MAP_TASK, kwargs=arguments, app=signature.app)
