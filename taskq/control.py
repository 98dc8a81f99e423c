"""The control plane: `app.control.revoke(...)`, carried by the store and broker broadcasts."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import orjson

from taskq import defaults

if TYPE_CHECKING:
    from taskq.app import TaskQ

CONTROL_CHANNEL = "taskq.control"


class Control:
    """Commands to every worker of the app."""

    def __init__(self, app: TaskQ) -> None:
        self.app = app

    async def revoke(self, task_ids: str | Sequence[str], terminate: bool = False) -> None:
        """Never run these tasks. The revocation is kept in the result store (for
        `result_expires`), so workers started later honour it too, and broadcast to the
        running workers; `terminate=True` also cancels them where they run now."""
        ids = [task_ids] if isinstance(task_ids, str) else list(task_ids)
        store = await self.app.connected_store()
        await store.revoke(ids, self.revoke_ttl)
        broker = await self.app.connected_broker()
        await broker.broadcast(
            CONTROL_CHANNEL, encode_command("revoke", ids=ids, terminate=terminate)
        )

    @property
    def revoke_ttl(self) -> float:
        return self.app.conf.result_expires or defaults.RESULT_EXPIRES


def encode_command(op: str, **fields: Any) -> bytes:
    return orjson.dumps({"op": op, **fields})


def decode_command(payload: bytes) -> dict[str, Any] | None:
    """A control command, or None for a payload that is not one."""
    try:
        command = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    return command if isinstance(command, dict) and isinstance(command.get("op"), str) else None
