"""Task and call options, defined once.

`BUILTIN_OPTIONS` is the one list of what `@app.task(...)` and `apply_async(...)` /
`send_task(...)` / `Signature.set(...)` accept; every other list of option names (the
decorator's check, what a call inherits from its task, what a signature carries on the wire,
what a worker passes on when it publishes a workflow step) is derived from it. A middleware
adds task options of its own by listing them in its `options` (see `taskq.middleware`).

`CallOptions` is the same list of call options as a TypedDict, for type checkers; the module
refuses to import if the two disagree.

Imports nothing of taskq but `errors` and `defaults`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypedDict

from taskq import defaults
from taskq.compression import compression_name
from taskq.errors import ConfigurationError
from taskq.suggest import did_you_mean

if TYPE_CHECKING:
    from collections.abc import Sequence

    from taskq.canvas import Signature

NONE = type(None)
NUMBER = (int, float, NONE)
OPTIONAL_STRING = (str, NONE)


@dataclass(frozen=True, slots=True)
class Option:
    """One option: of a task (`@app.task(name=value)`), of a call, or both.

    `setting` names the app setting a task without a value of its own falls back on;
    `inherited` call options take the task's value when the call gives none (the producer
    needs them: routing, expiry, serialization); `wire` is the JSON types a call option may
    have inside a signature's options; `check` validates a task's value (it raises).
    A `publishing` call option is about the publishing call itself, not its message: a
    signature, which a worker may publish long after, refuses it.
    """

    name: str
    default: Any = None
    task: bool = True
    call: bool = False
    inherited: bool = False
    wire: tuple[type, ...] = ()
    setting: str | None = None
    check: Callable[[Any], object] | None = None
    publishing: bool = False


_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*([smh])\s*$")
_PERIODS = {"s": 1.0, "m": 60.0, "h": 3600.0}


def parse_rate(rate: str) -> float:
    """Seconds between starts for a rate such as "10/s", "100/m", "1000/h"."""
    match = _RATE.match(rate) if isinstance(rate, str) else None
    if match is None or float(match.group(1)) <= 0:
        raise ConfigurationError(
            f"bad rate_limit {rate!r}: expected e.g. '10/s', '100/m', '1000/h'"
        )
    return _PERIODS[match.group(2)] / float(match.group(1))


def _priority(value: object) -> None:
    if value is not None and (type(value) is not int or not 0 <= value <= 9):
        raise ValueError(f"priority must be an integer 0-9, not {value!r}")


def _pool(value: object) -> None:
    if value is not None and value not in defaults.POOLS:
        raise ValueError(f"pool must be 'thread' or 'process', not {value!r}")


def _rate_scope(value: object) -> None:
    if value not in ("worker", "global"):
        raise ValueError(f"rate_limit_scope must be 'worker' or 'global', not {value!r}")


def _boolean(name: str) -> Callable[[object], None]:
    def check(value: object) -> None:
        if type(value) is not bool:
            raise TypeError(f"{name} must be True or False, not {value!r}")

    return check


def _time_limits(task: str, settings: Mapping[str, Any]) -> None:
    soft, hard = settings.get("soft_time_limit"), settings.get("time_limit")
    if soft is not None and hard is not None and soft > hard:
        raise ValueError(
            f"task {task!r}: soft_time_limit ({soft} s) is over time_limit ({hard} s): "
            "the hard limit would stop it before the soft one could warn it"
        )


def _exception_types(value: object) -> None:
    kinds = value if isinstance(value, tuple | list) else (value,)
    if not all(isinstance(kind, type) and issubclass(kind, BaseException) for kind in kinds):
        raise TypeError(f"expected exception types, not {value!r}")


BUILTIN_OPTIONS: tuple[Option, ...] = (
    # task and call
    Option("queue", call=True, inherited=True, wire=OPTIONAL_STRING),
    Option("priority", call=True, inherited=True, wire=(int, NONE), check=_priority),
    Option("expires", call=True, inherited=True, wire=NUMBER),
    Option("serializer", call=True, inherited=True, wire=OPTIONAL_STRING),
    Option(
        "compression",
        call=True,
        inherited=True,
        wire=OPTIONAL_STRING,
        setting="task_compression",
        check=lambda name: name is None or compression_name(name),
    ),
    Option("time_limit", call=True, inherited=True, wire=NUMBER, setting="task_time_limit"),
    Option(
        "soft_time_limit", call=True, inherited=True, wire=NUMBER, setting="task_soft_time_limit"
    ),
    Option("ignore_result", call=True, wire=(bool, NONE), setting="task_ignore_result"),
    # call only
    Option("task_id", task=False, call=True, wire=(str,)),
    Option("countdown", task=False, call=True, wire=NUMBER),
    Option("eta", task=False, call=True, wire=NUMBER),
    Option("headers", task=False, call=True, wire=(dict, NONE)),
    Option("idempotency_key", task=False, call=True, wire=OPTIONAL_STRING),
    Option("link", task=False, call=True),
    Option("link_error", task=False, call=True),
    Option(
        "publish_timeout",
        task=False,
        call=True,
        setting="broker_publish_timeout",
        publishing=True,
    ),
    Option("broadcast", False, task=False, call=True, publishing=True),
    # task only
    Option("max_retries", defaults.MAX_RETRIES),
    Option("default_retry_delay", defaults.RETRY_DELAY),
    Option("autoretry_for", (), check=_exception_types),
    Option("dont_autoretry_for", (), check=_exception_types),
    Option("retry_backoff", False),
    Option("retry_backoff_max", defaults.RETRY_BACKOFF_MAX),
    Option("retry_jitter", True),
    Option("acks_late", setting="task_acks_late"),
    Option("reject_on_worker_lost", setting="task_reject_on_worker_lost"),
    Option("track_started", setting="task_track_started"),
    Option(
        "rate_limit",
        check=lambda rate: rate is None or parse_rate(rate),
        setting="task_default_rate_limit",
    ),
    Option("rate_limit_scope", "worker", check=_rate_scope),
    Option("unique_for"),
    Option("typing", True, check=_boolean("typing")),
    Option("pool", check=_pool),  # where a plain function runs; None: the worker's --pool
)


class CallOptions(TypedDict, total=False):
    """Options of one call: `apply_async(args, kwargs, **options)`, `send_task(name, ...)`."""

    task_id: str | None
    queue: str | None
    priority: int | None
    countdown: float | None
    eta: datetime | float | None
    expires: float | timedelta | datetime | None
    headers: Mapping[str, Any] | None
    serializer: str | None
    compression: str | None
    time_limit: float | None
    soft_time_limit: float | None
    idempotency_key: str | None
    ignore_result: bool | None
    link: Signature[Any] | Sequence[Signature[Any]] | None
    link_error: Signature[Any] | Sequence[Signature[Any]] | None
    publish_timeout: float | None
    broadcast: bool


class OptionTable:
    """The options one app accepts: the built-in ones and those its middleware declares."""

    def __init__(self, options: Iterable[Option] = BUILTIN_OPTIONS) -> None:
        self._options: dict[str, Option] = {}
        for option in options:
            self.add(option)

    def add(self, option: Option) -> None:
        known = self._options.get(option.name)
        if known is not None and known != option:
            raise ConfigurationError(f"option {option.name!r} is declared twice, differently")
        if option.call and option not in BUILTIN_OPTIONS:
            raise ConfigurationError(f"option {option.name!r}: middleware declares task options")
        self._options[option.name] = option

    def __iter__(self) -> Any:
        return iter(self._options.values())

    @property
    def inherited(self) -> tuple[str, ...]:
        return tuple(name for name, option in self._options.items() if option.inherited)

    def task_settings(self, task: str, given: Mapping[str, Any]) -> dict[str, Any]:
        """Every task option's value for task `task`: `given` (checked), else its default."""
        task_options = {name: o for name, o in self._options.items() if o.task}
        _refuse_unknown(given, task_options, f"task option(s) for {task!r}")
        settings = {name: option.default for name, option in task_options.items()}
        for name, value in given.items():
            check = task_options[name].check
            if check is not None:
                check(value)
            settings[name] = value
        _time_limits(task, settings)
        return settings


def check_call(task: str, given: Mapping[str, Any], kind: str = "call") -> None:
    """`TypeError` naming the options of a call (or a signature) of `task` that are none.
    (Middleware declares task options only: the call options are the built-in ones.)"""
    publishing = sorted(set(given) & PUBLISHING_OPTIONS) if kind != "call" else []
    if publishing:
        raise TypeError(
            f"{', '.join(publishing)}: an option of the call that publishes "
            f"(apply_async), not of a {kind} of {task!r}"
        )
    _refuse_unknown(given, CALL_OPTIONS, f"{kind} option(s) for {task!r}")


def _refuse_unknown(given: Iterable[str], known: Iterable[str], what: str) -> None:
    names = set(known)
    unknown = sorted(set(given) - names)
    if unknown:
        named = ", ".join(name + did_you_mean(name, names) for name in unknown)
        raise TypeError(f"unknown {what}: {named}")


WIRE_TYPES: dict[str, tuple[type, ...]] = {o.name: o.wire for o in BUILTIN_OPTIONS if o.wire}
CALL_OPTIONS = frozenset(o.name for o in BUILTIN_OPTIONS if o.call)
PUBLISHING_OPTIONS = frozenset(o.name for o in BUILTIN_OPTIONS if o.publishing)

if set(CallOptions.__annotations__) != CALL_OPTIONS:  # pragma: no cover - a developer's slip
    raise ImportError("CallOptions and BUILTIN_OPTIONS list different call options")
