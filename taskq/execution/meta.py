"""The task states a job's stages record, all built the same way: with what the store keeps
of the call (name, arguments, queue, retries, worker, the results it published)."""

from __future__ import annotations

from typing import Any

from taskq import states
from taskq.execution.job import Job
from taskq.message import JSON
from taskq.stores.base import TaskMeta, failure_fields


def state(job: Job, hostname: str, status: str, **fields: Any) -> TaskMeta:
    message = job.message
    json = message.content_type == JSON  # another serializer's arguments may not be JSON
    return TaskMeta(
        message.id,
        status,
        task=message.task,
        retries=message.retries,
        worker=hostname,
        args=message.args if json else None,
        kwargs=message.kwargs if json else None,
        queue=message.queue,
        children=job.request.children or None,
        **fields,
    )


def failure(job: Job, hostname: str, exc: BaseException, status: str = states.FAILURE) -> TaskMeta:
    return state(job, hostname, status, **failure_fields(exc))
