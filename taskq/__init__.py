"""taskq: an asyncio-native distributed task queue."""

from taskq import states
from taskq.app import TaskQ
from taskq.beat import crontab
from taskq.canvas import Signature, chain, chord, chunks, group, signature
from taskq.errors import (
    ConfigurationError,
    ContentRefusedError,
    MessageError,
    MessageTooLargeError,
    NotRegisteredError,
    TaskError,
    TaskQError,
    TimeoutError,
)
from taskq.result import AsyncResult, EagerResult, GroupResult
from taskq.task import Request, Task
from taskq.worker.worker import Worker
from taskq.workflow import ChordError

__all__ = [
    "AsyncResult",
    "ChordError",
    "ConfigurationError",
    "ContentRefusedError",
    "EagerResult",
    "GroupResult",
    "MessageError",
    "MessageTooLargeError",
    "NotRegisteredError",
    "Request",
    "Signature",
    "Task",
    "TaskError",
    "TaskQ",
    "TaskQError",
    "TimeoutError",
    "Worker",
    "chain",
    "chord",
    "chunks",
    "crontab",
    "group",
    "signature",
    "states",
]
__version__ = "0.1.0"
