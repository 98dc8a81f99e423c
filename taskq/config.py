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

    def config_from_object(self, obj: object | str, namespace: str | None = None) -> None:
        """Load the settings named as attributes (or keys) of a module, class or mapping, or of
        the object a string names: `"module"` or `"module:attribute"` (`"django.conf:settings"`).

        Without a namespace they are the lowercase names of settings. With `namespace="TASKQ"`
        only the uppercase `TASKQ_` ones are read, `TASKQ_BROKER_URL` as `broker_url`; an
        unknown `TASKQ_` name is an error, the object's other names are not taskq's.
        """
        if isinstance(obj, str):
            obj = _import_object(obj)
        if namespace is not None:
            self.update(_namespaced_settings_of(obj, namespace))
        elif isinstance(obj, Mapping):
            self.update(obj)
        else:
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
        max_priority = self.task_queue_max_priority
        if max_priority is not None and not 1 <= max_priority <= 9:
            raise ConfigurationError("task_queue_max_priority must be 1-9 (or None)")


_FIELDS: dict[str, dataclasses.Field[Any]] = {f.name: f for f in dataclasses.fields(Settings)}
_PREFIXES = {name.split("_", 1)[0] + "_" for name in _FIELDS}
_SECONDS = ("result_expires", "task_time_limit", "task_soft_time_limit")


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


def _import_object(path: str) -> object:
    """The module `path` names, or the attribute of one: `"module:attribute.attribute"`."""
    module_name, _, attributes = path.partition(":")
    try:
        obj: object = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(f"cannot import config module {module_name!r}: {exc}") from exc
    for attribute in attributes.split(".") if attributes else ():
        try:
            obj = getattr(obj, attribute)
        except AttributeError:
            raise ConfigurationError(f"{path!r}: no attribute {attribute!r}") from None
    return obj


def _namespaced_settings_of(obj: object, namespace: str) -> dict[str, Any]:
    """The `NAMESPACE_<SETTING>` attributes (or keys) of `obj`, by setting name."""
    if not namespace.isidentifier() or not namespace.isupper():
        raise ConfigurationError(f"namespace must be uppercase, such as 'TASKQ', not {namespace!r}")
    prefix = f"{namespace}_"
    names = {prefix + name.upper() for name in _FIELDS}
    keys = list(obj) if isinstance(obj, Mapping) else dir(obj)
    found: dict[str, Any] = {}
    for key in keys:
        if not isinstance(key, str) or not key.startswith(prefix):
            continue
        if key not in names:
            raise ConfigurationError(f"{key}: unknown setting{_hint(key.upper(), names)}")
        value = obj[key] if isinstance(obj, Mapping) else getattr(obj, key)
        found[key[len(prefix) :].lower()] = value
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
