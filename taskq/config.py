"""Settings: one dataclass with Celery's names, loaded from code, objects and `TASKQ_*` env vars.

Precedence, lowest first: defaults, `TaskQ(...)` keyword arguments, `conf.update()` /
`config_from_object()`, and the environment, which always wins so that a deployment
can point the same code at another broker (`TASKQ_BROKER_URL=redis://...`).
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import os
import types
from collections.abc import Callable, Iterable, Mapping
from datetime import timedelta
from typing import Any

import orjson

from taskq import defaults
from taskq.errors import ConfigurationError
from taskq.serializers import SERIALIZERS

ENV_PREFIX = "TASKQ_"
RouteSpec = Mapping[str, Any] | Callable[..., Any]


@dataclasses.dataclass(slots=True)
class Settings:
    """Every setting taskq knows. Unknown names are an error, never ignored."""

    broker_url: str | None = None
    result_backend: str | None = None
    broker_transport_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    # Connecting: a worker or beat retries at startup; how long a publish may wait (None: as
    # long as the broker's own window, Redis' `reconnect_timeout`, RabbitMQ's `publish_timeout`).
    broker_connection_retry_on_startup: bool = True
    broker_connection_max_retries: int | None = 100  # None: for ever
    broker_publish_timeout: float | None = None
    result_backend_transport_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    task_default_queue: str = defaults.QUEUE
    task_default_exchange: str = "taskq"
    task_default_priority: int | None = None
    task_queue_max_priority: int | None = None
    task_routes: RouteSpec | list[RouteSpec] | None = None
    task_serializer: str = "json"
    accept_content: list[str] = dataclasses.field(default_factory=lambda: ["json"])
    task_max_message_bytes: int = defaults.MAX_MESSAGE_BYTES
    task_acks_late: bool = False
    task_reject_on_worker_lost: bool = True
    task_ignore_result: bool = False
    task_time_limit: float | None = None
    task_soft_time_limit: float | None = None
    task_always_eager: bool = False
    task_eager_propagates: bool = False
    result_expires: float | None = defaults.RESULT_EXPIRES
    worker_concurrency: int = 100
    worker_threads: int = 10
    worker_prefetch_multiplier: int = 4
    worker_shutdown_timeout: float = 30.0
    beat_schedule: dict[str, Any] = dataclasses.field(default_factory=dict)
    beat_max_loop_interval: float = 300.0
    beat_lease_ttl: float = 10.0
    timezone: str = "UTC"

    def __setattr__(self, name: str, value: Any) -> None:
        if name not in _FIELDS:
            raise ConfigurationError(_unknown(name))
        object.__setattr__(self, name, _normalise(name, value))

    def update(self, other: Mapping[str, Any] | None = None, /, **settings: Any) -> None:
        """Set several settings at once; every name is checked before any is set."""
        values = {**(other or {}), **settings}
        for name in values:
            if name not in _FIELDS:
                raise ConfigurationError(_unknown(name))
        for name, value in values.items():
            setattr(self, name, value)
        self.apply_environment()

    def config_from_object(self, obj: object | str) -> None:
        """Load the settings named as attributes (or keys) of a module, class or mapping."""
        if isinstance(obj, str):
            try:
                obj = importlib.import_module(obj)
            except ImportError as exc:
                raise ConfigurationError(f"cannot import config module {obj!r}: {exc}") from exc
        if isinstance(obj, Mapping):
            self.update(obj)
            return
        self.update(_settings_of(obj))

    def apply_environment(self, environ: Mapping[str, str] | None = None) -> None:
        """Apply `TASKQ_<SETTING>` variables; an unknown `TASKQ_*` name is an error."""
        environ = os.environ if environ is None else environ
        for key, raw in environ.items():
            if not key.startswith(ENV_PREFIX):
                continue
            name = key[len(ENV_PREFIX) :].lower()
            if name not in _FIELDS:
                raise ConfigurationError(f"environment variable {key}: {_unknown(name)}")
            setattr(self, name, _parse_env(key, name, raw))

    def validate(self) -> None:
        for name in ("worker_concurrency", "worker_threads", "worker_prefetch_multiplier"):
            if getattr(self, name) < 1:
                raise ConfigurationError(f"{name} must be at least 1")
        unknown = set(self.accept_content) - set(SERIALIZERS)
        if unknown:
            raise ConfigurationError(f"accept_content names unknown serializers: {sorted(unknown)}")
        if self.task_serializer not in SERIALIZERS:
            raise ConfigurationError(f"unknown task_serializer {self.task_serializer!r}")
        priority = self.task_default_priority
        if priority is not None and not 0 <= priority <= 9:
            raise ConfigurationError("task_default_priority must be 0-9")
        if not isinstance(self.broker_connection_retry_on_startup, bool):
            raise ConfigurationError("broker_connection_retry_on_startup must be True or False")
        retries = self.broker_connection_max_retries
        if retries is not None and (type(retries) is not int or retries < 0):
            raise ConfigurationError(
                f"broker_connection_max_retries must be an integer >= 0 or None, not {retries!r}"
            )
        if not is_timeout(self.broker_publish_timeout):
            raise ConfigurationError(
                "broker_publish_timeout must be a positive number of seconds or None, "
                f"not {self.broker_publish_timeout!r}"
            )
        max_priority = self.task_queue_max_priority
        if max_priority is not None and not 1 <= max_priority <= 9:
            raise ConfigurationError("task_queue_max_priority must be 1-9 (or None)")


_FIELDS: dict[str, dataclasses.Field[Any]] = {f.name: f for f in dataclasses.fields(Settings)}
_PREFIXES = {name.split("_", 1)[0] + "_" for name in _FIELDS}
_SECONDS = ("result_expires", "task_time_limit", "task_soft_time_limit")


def is_timeout(seconds: object) -> bool:
    """Whether `seconds` is None (no timeout) or a positive number of seconds."""
    if seconds is None:
        return True
    return isinstance(seconds, int | float) and not isinstance(seconds, bool) and seconds > 0


def _unknown(name: str) -> str:
    return f"unknown setting {name!r}{_hint(name, _FIELDS)}"


def _hint(name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def checked_options(
    given: Mapping[str, Any] | None, known: Iterable[str], setting: str
) -> dict[str, Any]:
    """A copy of the options `given` in `setting` (a backend's transport options); a name
    that is not `known` is a `ConfigurationError`, never ignored."""
    options = dict(given or {})
    names = set(known)
    for name in sorted(options):
        if name not in names:
            raise ConfigurationError(f"{setting}: unknown option {name!r}{_hint(name, names)}")
    return options


def _normalise(name: str, value: Any) -> Any:
    if name in _SECONDS and isinstance(value, timedelta):
        return value.total_seconds()
    if name == "accept_content" and isinstance(value, str | tuple | set | frozenset):
        return [value] if isinstance(value, str) else list(value)
    return value


def _settings_of(obj: object) -> dict[str, Any]:
    """Public lowercase attributes that name settings; a misspelt one is an error."""
    found: dict[str, Any] = {}
    for name in dir(obj):
        if name.startswith("_") or not name.islower():
            continue
        value = getattr(obj, name)
        if isinstance(value, types.ModuleType | type):
            continue
        if name in _FIELDS or any(name.startswith(prefix) for prefix in _PREFIXES):
            found[name] = value
    return found


def _parse_env(key: str, name: str, raw: str) -> Any:
    annotation = str(_FIELDS[name].type)  # a string: this module uses postponed annotations
    try:
        if raw == "" and "None" in annotation:
            return None
        if annotation.startswith("bool"):
            return _parse_bool(raw)
        if annotation.startswith("int"):
            return int(raw)
        if annotation.startswith("float"):
            return float(raw)
        if annotation.startswith("str"):
            return raw
        if annotation.startswith("list[str]") and not raw.lstrip().startswith("["):
            return [part.strip() for part in raw.split(",") if part.strip()]
        return orjson.loads(raw)
    except (ValueError, orjson.JSONDecodeError) as exc:
        raise ConfigurationError(f"environment variable {key}={raw!r}: {exc}") from None


def _parse_bool(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ValueError("expected true/false")
