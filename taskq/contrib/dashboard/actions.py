"""The state-changing requests (POST /api/...): each one an async function of the app, the
path's target and the request's fields, returning what it did in one sentence; a ValueError
(or `NotFound`) says in one line why it did nothing."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING

from taskq import dlq
from taskq.contrib.dashboard.views import NotFound
from taskq.control import Replies

if TYPE_CHECKING:
    from taskq.app import TaskQ

Fields = Mapping[str, str]
Action = Callable[["TaskQ", str, Fields], Awaitable[str]]


def _field(fields: Fields, name: str) -> str:
    value = fields.get(name, "").strip()
    if not value:
        raise ValueError(f"{name} is required")
    return value


def _count(fields: Fields) -> int:
    value = fields.get("n", "1").strip() or "1"
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"n must be a positive whole number, not {value!r}")
    return int(value)


def _answered(replies: Replies | None, worker: str, did: str) -> str:
    if replies is None or worker in replies.missing or worker not in replies.answered:
        raise ValueError(f"worker {worker} did not answer (is it online?)")
    if worker in replies.errors:
        raise ValueError(f"worker {worker}: {replies.errors[worker]}")
    return f"{worker}: {did}"


# -- workers -------------------------------------------------------------------------------


async def pool_grow(app: TaskQ, worker: str, fields: Fields) -> str:
    n = _count(fields)
    replies = await app.control.pool_grow(n, destination=worker)
    return _answered(replies, worker, f"concurrency raised by {n}")


async def pool_shrink(app: TaskQ, worker: str, fields: Fields) -> str:
    n = _count(fields)
    replies = await app.control.pool_shrink(n, destination=worker)
    return _answered(replies, worker, f"concurrency lowered by {n}")


async def add_consumer(app: TaskQ, worker: str, fields: Fields) -> str:
    queue = _field(fields, "queue")
    replies = await app.control.add_consumer(queue, destination=worker)
    return _answered(replies, worker, f"consuming {queue}")


async def cancel_consumer(app: TaskQ, worker: str, fields: Fields) -> str:
    queue = _field(fields, "queue")
    replies = await app.control.cancel_consumer(queue, destination=worker)
    return _answered(replies, worker, f"no longer consuming {queue}")


async def shutdown(app: TaskQ, worker: str, fields: Fields) -> str:
    replies = await app.control.shutdown(destination=worker)
    return _answered(replies, worker, "warm shutdown begun")


# -- tasks ---------------------------------------------------------------------------------


async def revoke(app: TaskQ, task_id: str, fields: Fields) -> str:
    await app.control.revoke(task_id)
    return f"task {task_id} revoked"


async def terminate(app: TaskQ, task_id: str, fields: Fields) -> str:
    await app.control.revoke(task_id, terminate=True)
    return f"task {task_id} revoked and terminated"


async def retry(app: TaskQ, task_id: str, fields: Fields) -> str:
    """Send the task again now, with the arguments the result store kept, as a new task."""
    meta = await (await app.connected_store()).get(task_id)
    if meta is None or meta.task is None:
        raise NotFound(f"the result store has no task {task_id!r} to send again")
    if meta.args is None:
        raise ValueError(f"task {task_id}: the result store kept no JSON arguments to send again")
    result = await app.send_task(meta.task, meta.args, meta.kwargs or {}, queue=meta.queue)
    return f"task {task_id} sent again as {result.id}"


# -- queues and dead letters ---------------------------------------------------------------


async def purge(app: TaskQ, queue: str, fields: Fields) -> str:
    if fields.get("confirm", "").strip() != queue:
        raise ValueError(f"type the queue's name, {queue}, to confirm the purge")
    count = await (await app.connected_broker()).purge(queue)
    return f"purged {count} message(s) from {queue}"


async def replay(app: TaskQ, queue: str, fields: Fields) -> str:
    wanted = fields.get("letter_id", "").strip() or None
    replayed, problems = await dlq.replay(app, queue, wanted)
    if wanted is not None and not replayed and not problems:
        raise NotFound(f"no dead letter {wanted!r} in queue {queue}")
    left = f"; left in place: {'; '.join(problems)}" if problems else ""
    return f"replayed {replayed} dead letter(s) of {queue}{left}"


async def delete(app: TaskQ, queue: str, fields: Fields) -> str:
    wanted = fields.get("letter_id", "").strip() or None
    deleted = await dlq.delete(app, queue, wanted)
    if wanted is not None and not deleted:
        raise NotFound(f"no dead letter {wanted!r} in queue {queue}")
    return f"deleted {deleted} dead letter(s) of {queue}"


# -- beat ----------------------------------------------------------------------------------


async def enable(app: TaskQ, entry: str, fields: Fields) -> str:
    await app.beat.set_enabled(entry, True)
    return f"beat entry {entry} enabled"


async def disable(app: TaskQ, entry: str, fields: Fields) -> str:
    await app.beat.set_enabled(entry, False)
    return f"beat entry {entry} disabled"


# Path: /api/<kind>/<target>/<action>, with the fields each action takes.
ACTIONS: dict[str, dict[str, tuple[Action, frozenset[str]]]] = {
    "workers": {
        "pool-grow": (pool_grow, frozenset({"n"})),
        "pool-shrink": (pool_shrink, frozenset({"n"})),
        "add-consumer": (add_consumer, frozenset({"queue"})),
        "cancel-consumer": (cancel_consumer, frozenset({"queue"})),
        "shutdown": (shutdown, frozenset()),
    },
    "tasks": {
        "revoke": (revoke, frozenset()),
        "terminate": (terminate, frozenset()),
        "retry": (retry, frozenset()),
    },
    "queues": {"purge": (purge, frozenset({"confirm"}))},
    "dead-letters": {
        "replay": (replay, frozenset({"letter_id"})),
        "delete": (delete, frozenset({"letter_id"})),
    },
    "beat": {"enable": (enable, frozenset()), "disable": (disable, frozenset())},
}


def find(kind: str, action: str, fields: Fields) -> Action:
    """The action of the path; an unknown one, or a field it does not take, is an error."""
    try:
        found, takes = ACTIONS[kind][action]
    except KeyError:
        known = ", ".join(f"{k}/{a}" for k, table in ACTIONS.items() for a in table)
        raise NotFound(f"no action {kind}/<name>/{action}: the actions are {known}") from None
    unknown = sorted(set(fields) - takes)
    if unknown:
        allowed = ", ".join(sorted(takes)) or "no fields"
        raise ValueError(f"{kind}/{action} does not take {', '.join(unknown)} (it takes {allowed})")
    return found
