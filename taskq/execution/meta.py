"""The task states a job's stages record, all built the same way."""

from __future__ import annotations

from typing import Any

from taskq import states
from taskq.execution.job import Job
from taskq.stores.base import TaskMeta


def state(job: Job, hostname: str, status: str, **fields: Any) -> TaskMeta:
    message = job.message
    return TaskMeta(
        message.id, status, task=message.task, retries=message.retries, worker=hostname, **fields
    )


def failure(job: Job, hostname: str, exc: BaseException, status: str = states.FAILURE) -> TaskMeta:
    message = job.message
    meta = TaskMeta.from_exception(
        message.id, exc, task=message.task, retries=message.retries, worker=hostname
    )
    meta.status = status
    return meta
