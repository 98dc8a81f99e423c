"""Objects JSON carries as tagged values, `{"__type__": TAG, "__value__": ...}`: taskq's
result handles and remote errors, which a task may return (`AsyncResult`, `GroupResult`,
`ResultSet`, `TaskError`). Each writes its own tagged form (`tagged_json()`); reading one back
needs an app, so `taskq.result.restore` does it on the caller's side.

The shape is kombu's for its typed values; this module is the hook orjson calls (`default`)
for an object it cannot write, and is where such types join them.

Imports nothing of taskq.
"""

from __future__ import annotations

from typing import Any, Protocol

import orjson

TYPE, VALUE = "__type__", "__value__"


class Tagged(Protocol):
    def tagged_json(self) -> dict[str, Any]:
        """`{TYPE: tag, VALUE: json}`."""
        ...


def tag(name: str, value: Any) -> dict[str, Any]:
    return {TYPE: name, VALUE: value}


def write_tagged(value: Any) -> dict[str, Any]:
    """orjson's `default`: the tagged form of an object that has one; orjson's `TypeError`
    for any other."""
    tagged = getattr(value, "tagged_json", None)
    if tagged is None:
        raise TypeError(f"Type is not JSON serializable: {type(value).__name__}")
    written: dict[str, Any] = tagged()
    return written


def dumps(value: Any) -> bytes:
    return orjson.dumps(value, default=write_tagged)
