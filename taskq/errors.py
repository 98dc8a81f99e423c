"""Every exception taskq raises. Imports nothing of taskq but `tagging`."""

from __future__ import annotations

import builtins
from typing import Any

from taskq.tagging import tag


class TaskQError(Exception):
    """Base of every error raised by taskq itself."""


class CommandError(Exception):
    """A user error on the command line: printed as one line, exit status `exit_code`."""

    exit_code = 1


class AppLoadError(CommandError):
    """`-A` names an app that does not load: a usage error, exit status 2."""

    exit_code = 2


class StartupError(CommandError):
    """Options a supervised worker process cannot start with: exit status 2, so that its
    supervisor stops instead of starting it again and again."""

    exit_code = 2


class ConfigurationError(TaskQError):
    """A bad setting, URL or app reference."""


class MessageError(TaskQError):
    """A message that cannot be encoded or decoded."""


class MessageTooLargeError(MessageError):
    """An encoded message is over `task_max_message_bytes`."""


class ContentRefusedError(MessageError):
    """A message's serializer is not in `accept_content`."""


class SignatureError(MessageError):
    """A message whose signature does not verify, or an unsigned one where one is required."""


class TLSError(ConfigurationError):
    """A TLS handshake failed: the server's certificate was not trusted, or it refused the
    client's. Never retried: it will not mend itself."""


class NotRegisteredError(TaskQError):
    """A task name that the app does not know."""


class UnsupportedError(TaskQError):
    """What this broker (or store) cannot do; the message says what can be done instead."""


class TimeoutError(TaskQError, builtins.TimeoutError):
    """`AsyncResult.get()` waited longer than its timeout."""


class NotConnectedError(TaskQError):
    """The app was used before `await app.connect()` (or `async with app`)."""


class BrokerUnavailable(TaskQError, builtins.ConnectionError):
    """The broker (or the result store's server) cannot be reached: down, restarting, nothing
    listening on the port, or no answer within `publish_timeout`. It may come back: a worker
    or beat retries at startup (`broker_connection_retry_on_startup`). A `ConnectionError`
    too, so `autoretry_for=(ConnectionError,)` covers it."""


class LoginRefusedError(ConfigurationError):
    """Redis or RabbitMQ refused the URL's credentials or vhost: retrying cannot help."""


class TaskError(TaskQError):
    """A task failed remotely. `get()` raises a subclass named after the original type.

    The subclass also derives from the original exception when that is a builtin
    (so `except ValueError:` keeps working); `exc_type`, `exc_message` and
    `remote_traceback` carry what the worker recorded.
    """

    exc_type: str = "Exception"

    def __init__(self, exc_message: str, remote_traceback: str | None = None) -> None:
        super().__init__(exc_message)
        self.exc_message = exc_message
        self.remote_traceback = remote_traceback

    def __str__(self) -> str:
        return f"{self.exc_type}: {self.exc_message}"

    def tagged_json(self) -> dict[str, Any]:
        """As a task's result holds it (`taskq.tagging`); read back by `taskq.result.restore`."""
        details = {"type": self.exc_type, "message": self.exc_message}
        return tag(TASK_ERROR_TAG, {**details, "traceback": self.remote_traceback})


TASK_ERROR_TAG = "taskerror"


_task_error_types: dict[str, type[TaskError]] = {}


def task_error_type(exc_type: str) -> type[TaskError]:
    """The `TaskError` subclass that stands for the remote exception type `exc_type`; it also
    derives from that type when it is a builtin or one of taskq's own errors."""
    cls = _task_error_types.get(exc_type)
    if cls is None:
        short = exc_type.rsplit(".", 1)[-1]
        original = _known_type(exc_type)
        bases: tuple[type, ...] = (TaskError,)
        if original is not None:
            bases = (TaskError, original)
        attrs: dict[str, Any] = {"exc_type": exc_type, "__module__": "taskq.errors"}
        try:
            cls = type(short, bases, attrs)
        except TypeError:  # a builtin with an incompatible layout
            cls = type(short, (TaskError,), attrs)
        _task_error_types[exc_type] = cls
    return cls


def _known_type(exc_type: str) -> type[Exception] | None:
    """The exception class `exc_type` names, if a worker recorded a builtin or taskq's own."""
    if "." in exc_type:
        module, _, name = exc_type.rpartition(".")
        found = globals().get(name) if module in _OWN_MODULES else None
    else:
        found = getattr(builtins, exc_type, None)
    if found in (Exception, TaskError) or not isinstance(found, type):
        return None
    return found if issubclass(found, Exception) else None


class Retry(TaskQError):
    """Raised by `task.retry()`: the worker publishes the task again, later."""

    def __init__(
        self,
        exc: BaseException | None = None,
        countdown: float | None = None,
        *,
        eta: float | None = None,
        expires: float | None = None,
    ) -> None:
        when = f"retry in {countdown}s" if eta is None else f"retry at {eta}"
        super().__init__(when + (f": {exc!r}" if exc is not None else ""))
        self.exc = exc
        self.countdown = countdown
        self.eta = eta  # epoch seconds, instead of the countdown
        self.expires = expires  # epoch seconds: the retry's own, over the call's


class Replace(TaskQError):
    """Raised by `task.replace(sig)`: the worker publishes `element` (the signature, as
    it travels) in the task's place, under the task's id, and records nothing for it."""

    def __init__(self, element: dict[str, Any]) -> None:
        super().__init__(f"replaced by {element.get('task')!r}")
        self.element = element


class MaxRetriesExceededError(TaskQError):
    """`task.retry()` was called past `max_retries` without an exception to re-raise."""


class SoftTimeLimitExceeded(TaskQError):
    """Raised inside a coroutine task when its soft time limit passes; it may clean up."""


class TimeLimitExceeded(TaskQError):
    """The task passed its hard time limit and was cancelled (or abandoned, in a thread)."""


class TaskRevokedError(TaskQError):
    """The task was revoked, or expired, before it ran."""


class ChordError(TaskQError):
    """A member of a chord's header failed, so its callback cannot run."""

    @classmethod
    def of_member(cls, index: int, task_id: str, reason: str) -> ChordError:
        return cls(f"chord member {index} ({task_id}) failed: {reason}")


class WorkerLostError(TaskQError):
    """The worker stopped while the task ran and the message could not be given back."""


class BadArgumentsError(TaskQError):
    """The message's arguments do not fit the task function's signature."""


# Where taskq's own errors are (and were: ChordError lived in taskq.workflow) when recorded.
_OWN_MODULES = frozenset({__name__, "taskq.workflow", "taskq.worker.executor"})
