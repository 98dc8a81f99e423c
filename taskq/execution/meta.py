"""The task states a job's stages record, all built the same way: with what the store keeps
of the call (name, arguments, queue, retries, worker, the results it published)."""

from __future__ import annotations

from typing import Any

from taskq import states
from taskq.execution.job import Job
from taskq.message import JSON
from taskq.stores.base import TaskMeta, failure_fields


def state(
    job: Job, hostname: str, status: str, result: Any = None, date_done: float | None = None
) -> TaskMeta:
    message = job.message
    json = message.content_type == JSON  # another serializer's arguments may not be JSON
    # Positional, in TaskMeta's field order: a state is built twice per task, and matching
    # fourteen keywords to their fields costs more than the rest of the call.
    return TaskMeta(
        message.id,
        status,
        result,
        None,
        None,
        None,
        message.task,
        message.retries,
        hostname,
        date_done,
        message.args if json else None,
        message.kwargs if json else None,
        message.queue,
        job.request.children or None,
    )


def failure(job: Job, hostname: str, exc: BaseException, status: str = states.FAILURE) -> TaskMeta:
    meta = state(job, hostname, status)
    for name, value in failure_fields(exc).items():
        setattr(meta, name, value)
    return meta
