"""Objects JSON carries as tagged values, `{"__type__": TAG, "__value__": ...}`: taskq's
result handles and remote errors, which a task may return (`AsyncResult`, `GroupResult`,
`ResultSet`, `TaskError`). Each writes its own tagged form (`tagged_json()`); reading one back
needs an app, so `taskq.result.restore` does it on the caller's side.

The shape is kombu's for its typed values, which `taskq.typed_json` writes and reads; it
writes these objects too, through their `tagged_json()`.

Imports nothing of taskq.
"""

from __future__ import annotations

from typing import Any, Protocol

TYPE, VALUE = "__type__", "__value__"


class Tagged(Protocol):
    def tagged_json(self) -> dict[str, Any]:
        """`{TYPE: tag, VALUE: json}`."""
        ...


def tag(name: str, value: Any) -> dict[str, Any]:
    return {TYPE: name, VALUE: value}
