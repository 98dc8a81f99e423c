"""What each page shows, as JSON-ready dicts: the pages render them, `/api/` returns them."""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from taskq import states
from taskq.beat.scheduler import LEADER_LEASE, Beat, read_state
from taskq.contrib.dashboard.window import TASK_STATES, TaskFilter, TaskRecord
from taskq.errors import MessageError
from taskq.events import saferepr
from taskq.message import decode, peek_id
from taskq.routing import known_queues
from taskq.serializers import SERIALIZERS
from taskq.stores.base import TaskMeta
from taskq.suggest import did_you_mean
from taskq.urls import masked_url

if TYPE_CHECKING:
    from taskq.app import TaskQ
    from taskq.contrib.dashboard.monitor import Monitor

PAGE_SIZE = 50
DEAD_LETTERS_SHOWN = 200  # per queue


class NotFound(LookupError):
    """What a page or API call names does not exist (404, with this message)."""


async def overview(app: TaskQ, monitor: Monitor) -> dict[str, Any]:
    workers = monitor.workers.workers()
    rows = await queue_rows(app, monitor)
    rates = monitor.throughput.rates()
    return {
        "broker": masked_url((await app.connected_broker()).url),
        "workers_online": sum(1 for worker in workers if worker["online"]),
        "workers_offline": sum(1 for worker in workers if not worker["online"]),
        "workers": workers,
        "throughput": [{"at": at, "succeeded": ok, "failed": bad} for at, ok, bad in rates],
        "throughput_peak": max(ok + bad for _, ok, bad in rates),
        "queues": rows,
        "dead_letters": sum(row["dead_letters"] for row in rows),
        "active": [task for worker in workers for task in worker["active"] or []],
        "tasks_in_window": len(monitor.window),
        "max_tasks": monitor.window.max_tasks,
        "events_since": monitor.events_since,
        "inspected_at": monitor.workers.at,
    }


def workers(monitor: Monitor) -> dict[str, Any]:
    return {"workers": monitor.workers.workers(), "inspected_at": monitor.workers.at}


TASK_PARAMETERS = (*TaskFilter.__dataclass_fields__, "minutes", "page", "id")


def check_parameters(params: Iterable[str], accepted: Sequence[str]) -> None:
    """A query parameter a page does not take is a ValueError naming it, never ignored."""
    for name in params:
        if name not in accepted:
            takes = f"it takes {', '.join(accepted)}" if accepted else "it takes none"
            raise ValueError(f"unknown parameter {name!r}{did_you_mean(name, accepted)}: {takes}")


def task_filter(params: dict[str, str]) -> TaskFilter:
    """The filter of the tasks page's query string; a bad value is a ValueError saying so."""

    def text(name: str) -> str | None:
        return params.get(name, "").strip() or None

    def moment(name: str) -> float | None:
        value = text(name)
        if value is None:
            return None
        try:
            return float(value) if value.replace(".", "", 1).isdigit() else _iso(value)
        except ValueError:
            raise ValueError(
                f"{name} must be epoch seconds or an ISO date, not {value!r}"
            ) from None

    state = text("state")
    if state is not None and state not in TASK_STATES:
        raise ValueError(f"unknown state {state!r}: one of {', '.join(TASK_STATES)}")
    minutes = text("minutes")
    since = moment("since")
    if minutes is not None:
        try:
            since = time.time() - float(minutes) * 60
        except ValueError:
            raise ValueError(f"minutes must be a number, not {minutes!r}") from None
    return TaskFilter(state, text("name"), text("queue"), text("worker"), since, moment("until"))


def _iso(value: str) -> float:
    moment = datetime.fromisoformat(value)
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def page_number(params: dict[str, str]) -> int:
    value = params.get("page", "1") or "1"
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"page must be a positive whole number, not {value!r}")
    return int(value)


def tasks(monitor: Monitor, params: dict[str, str]) -> dict[str, Any]:
    wanted, page = task_filter(params), page_number(params)
    rows, total = monitor.window.select(wanted, (page - 1) * PAGE_SIZE, PAGE_SIZE)
    seen = monitor.workers.workers()
    return {
        "tasks": [record.to_json() for record in rows],
        "total": total,
        "page": page,
        "pages": max(1, math.ceil(total / PAGE_SIZE)),
        "filters": {name: params.get(name, "") for name in TaskFilter.__dataclass_fields__}
        | {"minutes": params.get("minutes", "")},
        "states": TASK_STATES,
        "workers": sorted({worker["name"] for worker in seen}),
        "queues": sorted(
            {record.queue for record in monitor.window.newest_first() if record.queue}
        ),
    }


async def task(app: TaskQ, monitor: Monitor, task_id: str) -> dict[str, Any]:
    """A task from the window, completed by what the result store holds of it (its real
    result, traceback and children); a task that left the window is read from the store."""
    record = monitor.window.get(task_id)
    meta = await (await app.connected_store()).get(task_id)
    if record is None and meta is None:
        raise NotFound(f"no task {task_id!r} in the dashboard's window nor in the result store")
    shown = (record or TaskRecord(task_id)).to_json()
    shown["in_window"] = record is not None
    if meta is not None:
        shown.update(_from_store(meta, shown))
    parent = shown["parent_id"]
    shown["parent"] = _summary(monitor, parent) if parent else None
    children = {
        child.id: _summary(monitor, child.id) for child in monitor.window.children_of(task_id)
    }
    for child in _child_ids(meta.children if meta else None):
        children.setdefault(child, _summary(monitor, child))
    shown["children"] = list(children.values())
    shown["groups"] = _groups(meta.children if meta else None)
    return shown


def _from_store(meta: TaskMeta, shown: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = {
        "stored_state": meta.status,
        "name": shown["name"] or meta.task,
        "worker": shown["worker"] or meta.worker,
        "queue": shown["queue"] or meta.queue,
        "retries": max(shown["retries"] or 0, meta.retries or 0),
        "finished": shown["finished"] or meta.date_done,
    }
    if shown["args"] is None and meta.args is not None:
        found["args"], found["kwargs"] = saferepr(meta.args), saferepr(meta.kwargs or {})
    if meta.status == states.SUCCESS:
        found["result"] = saferepr(meta.result)
    if meta.exc_type is not None:
        found["exception"] = f"{meta.exc_type}: {meta.exc_message}"
        found["traceback"] = meta.traceback or shown["traceback"]
    if shown["state"] == states.PENDING or meta.ready:
        found["state"] = meta.status
    return found


def _summary(monitor: Monitor, task_id: str) -> dict[str, Any]:
    record = monitor.window.get(task_id)
    return {
        "id": task_id,
        "name": record.name if record else None,
        "state": record.state if record else None,
    }


def _child_ids(children: list[Any] | None) -> list[str]:
    ids: list[str] = []
    for child in children or []:
        if isinstance(child, str):
            ids.append(child)
        elif isinstance(child, dict):
            ids += _child_ids(child.get("results"))
    return ids


def _groups(children: list[Any] | None) -> list[str]:
    return [
        str(child["group"])
        for child in children or []
        if isinstance(child, dict) and "group" in child
    ]


def queue_names(app: TaskQ, monitor: Monitor) -> list[str]:
    """The app's queues (as `taskq status` lists them) and every queue a worker consumes."""
    consumed = {queue for worker in monitor.workers.workers() for queue in worker["queues"]}
    return sorted(set(known_queues(app)) | consumed)


async def queue_rows(app: TaskQ, monitor: Monitor) -> list[dict[str, Any]]:
    broker = await app.connected_broker()
    consumers: dict[str, list[str]] = {}
    for worker in monitor.workers.workers():
        if worker["online"]:
            for queue in worker["queues"]:
                consumers.setdefault(queue, []).append(worker["name"])
    return [
        {
            "name": name,
            "messages": await broker.queue_length(name),
            "delayed": await broker.scheduled_length(name),
            "dead_letters": await broker.dead_letter_length(name),
            "consumers": consumers.get(name, []),
        }
        for name in queue_names(app, monitor)
    ]


async def queues(app: TaskQ, monitor: Monitor) -> dict[str, Any]:
    return {"queues": await queue_rows(app, monitor)}


async def dead_letters(app: TaskQ, monitor: Monitor, queue: str | None) -> dict[str, Any]:
    """The dead letters of `queue` (or of every queue that has some): each with its reason,
    the original message, and the traceback the result store kept of its task."""
    broker = await app.connected_broker()
    names = [queue] if queue else queue_names(app, monitor)
    store = await app.connected_store()
    shown = []
    for name in names:
        letters = await broker.dead_letters(name, limit=DEAD_LETTERS_SHOWN)
        metas = await store.get_many([peek_id(letter.body) or "" for letter in letters])
        rows = [
            _letter(app, letter.id, letter.reason, letter.failed_at, letter.body, meta)
            for letter, meta in zip(letters, metas, strict=True)
        ]
        if rows or queue:
            shown.append(
                {"queue": name, "total": await broker.dead_letter_length(name), "letters": rows}
            )
    return {"queues": shown, "queue": queue or ""}


def _letter(
    app: TaskQ, letter_id: str, reason: str, failed_at: float, body: bytes, meta: TaskMeta | None
) -> dict[str, Any]:
    summary, _, details = reason.partition("\n")  # a reason may carry a traceback
    row: dict[str, Any] = {
        "letter_id": letter_id,
        "reason": summary,
        "failed_at": failed_at,
        "task_id": peek_id(body),
        "traceback": (meta.traceback if meta else None) or details.strip() or None,
    }
    try:
        message = decode(body, frozenset(SERIALIZERS), app.conf.task_max_message_bytes)
    except MessageError as exc:
        row.update(task=None, args=None, kwargs=None, retries=None, problem=str(exc))
        row["body"] = saferepr(body)
        return row
    row.update(
        task=message.task,
        args=saferepr(message.args),
        kwargs=saferepr(message.kwargs),
        retries=message.retries,
        problem=None,
        body=None,
    )
    return row


async def beat(app: TaskQ) -> dict[str, Any]:
    """The beat entries with their schedule, last and next run, and the current leader."""
    store = await app.connected_store()
    scheduler = Beat(app)
    disabled = await app.beat.disabled()
    now = datetime.now(UTC)
    entries = []
    for entry in await app.beat.entries():
        state = await read_state(store, entry.name)
        upcoming = scheduler.upcoming(entry, state, now)
        entries.append(
            {
                "name": entry.name,
                "task": entry.task,
                "schedule": repr(entry.schedule),
                "args": saferepr(entry.args),
                "kwargs": saferepr(entry.kwargs),
                "enabled": entry.name not in disabled,
                "last_run": state.last_run if state and state.total_runs else None,
                "total_runs": state.total_runs if state else 0,
                "next_run": upcoming.timestamp() if upcoming else None,
            }
        )
    return {
        "entries": entries,
        "leader": await store.lease_holder(LEADER_LEASE),
        "lease_remaining": await store.lease_remaining(LEADER_LEASE),
    }
