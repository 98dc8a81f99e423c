"""taskq: an asyncio-native distributed task queue.

What users write and catch. A producer that imports taskq does not import the worker nor
beat: run one with `taskq worker`, or `taskq.testing.running_worker` in tests (`taskq.Worker`,
`taskq.crontab`, `Interval` and `solar` load their code on first use).
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

from taskq import states
from taskq.app import TaskQ
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

if TYPE_CHECKING:
    from taskq.beat.schedules import Interval, crontab
    from taskq.beat.solar import solar

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


# Loaded on first use, so that a producer imports no worker and no beat code.
_LAZY = {
    "Worker": "taskq.worker.worker",
    "Interval": "taskq.beat.schedules",
    "crontab": "taskq.beat.schedules",
    "solar": "taskq.beat.solar",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'taskq' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value
