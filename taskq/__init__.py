"""taskq: an asyncio-native distributed task queue.

What users write and catch. A producer that imports taskq does not import the worker: run one
with `taskq worker`, or `taskq.testing.running_worker` in tests (`taskq.Worker` still loads it
on first use).
"""

from typing import Any

from taskq import states
from taskq.app import TaskQ
from taskq.beat.schedules import Interval, crontab
from taskq.beat.solar import solar
from taskq.canvas import Signature, chain, chord, chunks, group, signature
from taskq.errors import (
    BrokerUnavailable,
    ChordError,
    ConfigurationError,
    ContentRefusedError,
    LoginRefusedError,
    MaxRetriesExceededError,
    MessageError,
    MessageTooLargeError,
    NotRegisteredError,
    Retry,
    SoftTimeLimitExceeded,
    TaskError,
    TaskQError,
    TaskRevokedError,
    TimeLimitExceeded,
    TimeoutError,
)
from taskq.middleware import Middleware
from taskq.result import AsyncResult, EagerResult, GroupResult, ResultSet
from taskq.sync import SyncResult
from taskq.task import Request, Task
from taskq.tolerant import tolerant_map

__all__ = [
    "AsyncResult",
    "BrokerUnavailable",
    "ChordError",
    "ConfigurationError",
    "ContentRefusedError",
    "EagerResult",
    "GroupResult",
    "Interval",
    "LoginRefusedError",
    "MaxRetriesExceededError",
    "MessageError",
    "MessageTooLargeError",
    "Middleware",
    "NotRegisteredError",
    "Request",
    "ResultSet",
    "Retry",
    "Signature",
    "SoftTimeLimitExceeded",
    "SyncResult",
    "Task",
    "TaskError",
    "TaskQ",
    "TaskQError",
    "TaskRevokedError",
    "TimeLimitExceeded",
    "TimeoutError",
    "chain",
    "chord",
    "chunks",
    "crontab",
    "group",
    "signature",
    "solar",
    "states",
    "tolerant_map",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name == "Worker":
        from taskq.worker.worker import Worker

        return Worker
    raise AttributeError(f"module 'taskq' has no attribute {name!r}")
