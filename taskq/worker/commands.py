"""The built-in commands a worker answers on the control plane, by Celery's names: each is
`await command(worker, runtime, **arguments)` and returns what is replied (JSON)."""

from __future__ import annotations

import os
import resource
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import fields
from typing import TYPE_CHECKING, Any

from taskq import states
from taskq.config import Settings
from taskq.control import BUILTIN_COMMANDS
from taskq.errors import MessageError
from taskq.message import decode, peek_id
from taskq.options import parse_rate
from taskq.urls import masked_url
from taskq.worker.runtime import WorkerRuntime, event_loop_name

if TYPE_CHECKING:
    from taskq.task import Task
    from taskq.worker.worker import Worker

Command = Callable[..., Awaitable[Any]]


async def ping(worker: Worker, runtime: WorkerRuntime) -> str:
    return "pong"


async def stats(worker: Worker, runtime: WorkerRuntime) -> dict[str, Any]:
    outcomes = worker.outcomes
    return {
        "pid": os.getpid(),
        "uptime": time.monotonic() - worker.started_at,
        "processed": sum(outcomes.values()),
        "failed": outcomes[states.FAILURE],
        "outcomes": dict(outcomes),
        "concurrency": worker.concurrency,
        "prefetch": worker.prefetch,
        "broker": masked_url(runtime.broker.url),
        "loop": event_loop_name(),
        "max_rss_kb": _max_rss_kb(),
        "pool_processes": worker.processes.pids if worker.processes else [],
    }


def _max_rss_kb() -> int:
    """The most memory this process has had resident, in KiB (macOS counts bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak // 1024 if sys.platform == "darwin" else peak


async def active(worker: Worker, runtime: WorkerRuntime) -> list[dict[str, Any]]:
    now, clock = time.time(), time.perf_counter()
    return [
        {
            "id": job.message.id,
            "name": job.message.task,
            "args": job.message.args,
            "kwargs": job.message.kwargs,
            "started_at": now - (clock - job.run_at) if job.run_at else None,
            "worker": worker.hostname,
        }
        for job in worker.running_jobs()
    ]


async def registered(worker: Worker, runtime: WorkerRuntime) -> dict[str, dict[str, Any]]:
    tasks = [worker.app.tasks[name] for name in worker.app.user_tasks()]
    return {
        task.name: {
            "queue": task.queue,
            "rate_limit": task.rate_limit,
            "time_limit": task.time_limit,
            "soft_time_limit": task.soft_time_limit,
            "max_retries": task.max_retries,
            "acks_late": task.acks_late,
        }
        for task in tasks
    }


async def reserved(worker: Worker, runtime: WorkerRuntime) -> list[dict[str, Any]]:
    """The messages prefetched here that no task loop has started."""
    return [
        _described(runtime, delivery.body, queue=delivery.queue, worker=worker.hostname)
        for delivery in worker.reserved_deliveries()
    ]


async def scheduled(
    worker: Worker, runtime: WorkerRuntime, limit: int = 100
) -> list[dict[str, Any]]:
    """The messages of the queues consumed here that the broker holds until they are due,
    soonest first (the `limit` soonest of each queue)."""
    found = []
    for queue in worker.queues:
        for item in await runtime.broker.scheduled(queue, _count(limit)):
            found.append(_described(runtime, item.body, queue=queue, due_at=item.due_at))
    return sorted(found, key=lambda message: message["due_at"])


def _described(runtime: WorkerRuntime, body: bytes, **where: Any) -> dict[str, Any]:
    """A message's id, task name and arguments (or why it does not decode), and `where`."""
    try:
        message = decode(body, runtime.accept_content, runtime.max_message_bytes)
    except MessageError as exc:  # dead-lettered when a worker takes it
        return {"id": peek_id(body), "error": str(exc), **where}
    what = {"name": message.task, "args": message.args, "kwargs": message.kwargs}
    return {"id": message.id, **what, **where}


async def active_queues(worker: Worker, runtime: WorkerRuntime) -> list[dict[str, Any]]:
    """The queues consumed here, with their options of `task_queues`."""
    options = worker.app.conf.task_queues
    return [{"name": queue, **options.get(queue, {})} for queue in worker.queues]


async def revoked(worker: Worker, runtime: WorkerRuntime) -> list[str]:
    """The task ids this worker holds revoked."""
    return sorted(runtime.revoked.ids())


async def conf(worker: Worker, runtime: WorkerRuntime) -> dict[str, Any]:
    """The worker's settings, passwords in URLs and signing keys masked."""
    conf = worker.app.conf
    settings = {
        f.name: getattr(conf, f.name) for f in fields(Settings) if not f.name.startswith("_")
    }
    for name in ("broker_url", "result_backend"):
        if settings[name] is not None:
            settings[name] = masked_url(settings[name])
    if settings["message_signing_key"] is not None:
        settings["message_signing_key"] = "***"
    return settings


async def revoke(
    worker: Worker, runtime: WorkerRuntime, ids: list[str], terminate: bool = False
) -> list[str]:
    """Revoke `ids` here (and with `terminate`, cancel them if they run); returns the ids."""
    if not isinstance(ids, list) or not all(isinstance(task_id, str) for task_id in ids):
        raise ValueError("ids must be a list of task ids")
    runtime.revoked.add(ids)
    if terminate:
        worker.terminate_tasks(set(ids))
    return ids


def _task(worker: Worker, name: object) -> Task[Any, Any]:
    if not isinstance(name, str) or name not in worker.app.user_tasks():
        raise LookupError(f"no task {name!r} is registered here")
    return worker.app.tasks[name]


async def rate_limit(
    worker: Worker, runtime: WorkerRuntime, task_name: str, rate_limit: str | None
) -> dict[str, Any]:
    """Set the task's rate limit here (None: none), from its next message on."""
    task = _task(worker, task_name)
    if rate_limit is not None:
        parse_rate(rate_limit)
    task.rate_limit = rate_limit
    runtime.pipeline.rebuild(task.name)
    return {"task": task.name, "rate_limit": rate_limit}


async def time_limit(
    worker: Worker,
    runtime: WorkerRuntime,
    task_name: str,
    soft: float | None = None,
    hard: float | None = None,
) -> dict[str, Any]:
    """Set the task's soft and hard time limits here (None: none), from its next run on."""
    task = _task(worker, task_name)
    for name, value in (("soft", soft), ("hard", hard)):
        if value is not None and (not isinstance(value, int | float) or value <= 0):
            raise ValueError(f"the {name} time limit must be positive seconds, not {value!r}")
    if soft is not None and hard is not None and soft > hard:
        raise ValueError(f"the soft time limit ({soft}) is above the hard one ({hard})")
    task.soft_time_limit, task.time_limit = soft, hard
    return {"task": task.name, "soft_time_limit": soft, "time_limit": hard}


async def shutdown(worker: Worker, runtime: WorkerRuntime) -> str:
    """A warm shutdown, as on SIGTERM."""
    worker.stop()
    return "shutting down"


async def pool_grow(worker: Worker, runtime: WorkerRuntime, n: int = 1) -> dict[str, int]:
    """Run `n` more tasks at once."""
    worker.grow(_count(n))
    return {"concurrency": worker.concurrency}


async def pool_shrink(worker: Worker, runtime: WorkerRuntime, n: int = 1) -> dict[str, int]:
    """Run `n` fewer tasks at once (running ones finish first)."""
    worker.shrink(_count(n))
    return {"concurrency": worker.concurrency}


async def add_consumer(worker: Worker, runtime: WorkerRuntime, queue: str) -> list[str]:
    """Consume `queue` too; returns the queues consumed now."""
    worker.add_consumer(queue)
    return list(worker.queues)


async def cancel_consumer(worker: Worker, runtime: WorkerRuntime, queue: str) -> list[str]:
    """Stop consuming `queue`; returns the queues consumed now."""
    worker.cancel_consumer(queue)
    return list(worker.queues)


def _count(n: object) -> int:
    if type(n) is not int or n < 1:
        raise ValueError(f"n must be a whole number of at least 1, not {n!r}")
    return n


BUILTIN: dict[str, Command] = {
    "ping": ping,
    "stats": stats,
    "active": active,
    "registered": registered,
    "reserved": reserved,
    "scheduled": scheduled,
    "active_queues": active_queues,
    "revoked": revoked,
    "conf": conf,
    "revoke": revoke,
    "rate_limit": rate_limit,
    "time_limit": time_limit,
    "shutdown": shutdown,
    "pool_grow": pool_grow,
    "pool_shrink": pool_shrink,
    "add_consumer": add_consumer,
    "cancel_consumer": cancel_consumer,
}
assert set(BUILTIN) == BUILTIN_COMMANDS, "taskq.control names the same commands"
