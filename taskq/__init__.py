"""taskq: an asyncio-native distributed task queue."""

from taskq import states
from taskq.app import TaskQ
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
from taskq.result import AsyncResult, EagerResult
from taskq.task import Request, Task
from taskq.worker.worker import Worker

__all__ = [
    "AsyncResult",
    "ConfigurationError",
    "ContentRefusedError",
    "EagerResult",
    "MessageError",
    "MessageTooLargeError",
    "NotRegisteredError",
    "Request",
    "Task",
    "TaskError",
    "TaskQ",
    "TaskQError",
    "TimeoutError",
    "Worker",
    "states",
]
__version__ = "0.1.0"
