"""Settings: one dataclass with Celery's names, loaded from code, objects and `TASKQ_*` env vars.

Precedence, lowest first: defaults, `TaskQ(...)` keyword arguments, `conf.update()` /
`config_from_object()`, and the environment, which always wins so that a deployment
can point the same code at another broker (`TASKQ_BROKER_URL=redis://...`).
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import os
import types
from collections.abc import Callable, Iterable, Mapping
from datetime import timedelta
from typing import Any

import orjson

from taskq import defaults
from taskq.compression import compression_name
from taskq.errors import ConfigurationError
from taskq.options import parse_rate
from taskq.serializers import SERIALIZERS
from taskq.signing import Signing
from taskq.suggest import did_you_mean
from taskq.tls import TLSOptions

ENV_PREFIX = "TASKQ_"
logger = logging.getLogger("taskq.config")
RouteSpec = Mapping[str, Any] | Callable[..., Any]
# What a queue in `task_queues` may say; only RabbitMQ's broker takes more than max_priority.
QUEUE_OPTIONS = frozenset(
    {"max_priority", "queue_arguments", "queue_type", "exchange", "routing_key"}
)

# Celery settings taskq does not take (yet), and why: naming one is an error that says so,
# so a celeryconfig.py never loads with a line that quietly does nothing.
_HMAC = "taskq signs messages with HMAC: set message_signing_key (docs/security.md)"
CELERY_UNSUPPORTED: dict[str, str] = {
    "worker_autoscaler": "taskq worker --autoscale MAX,MIN scales the task slots itself",
    "worker_state_db": "revocations are kept in the result store, shared by every worker",
    "worker_direct": "there are no per-worker queues; route to a queue a worker consumes",
    "worker_disable_rate_limits": "set no rate_limit (nor task_default_rate_limit) instead",
    "worker_hijack_root_logger": "taskq's CLI configures logging (--loglevel, worker_log_format)",
    "worker_task_log_format": "set worker_log_format='json': each line names its task",
    "worker_redirect_stdouts": "taskq never redirects stdout",
    "result_serializer": "results are always stored as JSON",
    "result_compression": "results are stored uncompressed (task_compression is for arguments)",
    "result_extended": "taskq always stores the task's name, args and kwargs with its state",
    "result_persistent": "persistence is the result store's own (SQLite, Redis)",
    "task_protocol": "taskq has one message format (docs/architecture.md)",
    "task_create_missing_queues": "taskq always creates the queues it publishes to",
    "task_default_exchange_type": "the default exchange is direct; name others in exchange_types",
    "task_default_routing_key": "the routing key is the queue's name",
    "task_publish_retry": "publishes retry while the broker reconnects; see publish_timeout",
    "task_publish_retry_policy": "publishes retry while the broker reconnects; see publish_timeout",
    "task_remote_tracebacks": "tracebacks are always stored with a failure",
    "task_store_errors_even_if_ignored": "a task with ignore_result stores no state at all",
    "task_inherit_parent_priority": "give the priority on the call or the task",
    "broker_heartbeat": "RabbitMQ heartbeats take the URL's ?heartbeat= parameter",
    "broker_failover_strategy": "the URLs of a fail-over list are tried until one answers",
    "beat_scheduler": "beat keeps its schedule in the result store, shared by every beat",
    "beat_schedule_filename": "beat keeps its schedule in the result store, shared by every beat",
    "beat_sync_every": "beat writes its state at every run",
    "security_key": _HMAC,
    "security_certificate": _HMAC,
    "security_cert_store": _HMAC,
    "cache_backend": "use result_backend",
    "database_url": "use result_backend (sqlite:///path)",
}


@dataclasses.dataclass(slots=True)
class Settings:
    """Every setting taskq knows. Unknown names are an error, never ignored."""

    # Not a setting: called with a setting's name once it has changed (see `observe`).
    # First, so that it is set before any setting.
    _observers: list[Callable[[str], None]] = dataclasses.field(
        default_factory=list, init=False, repr=False, compare=False
    )
    # A list of fail-over URLs is kept as Celery's other spelling of it, `url1;url2`.
    broker_url: str | None = None
    result_backend: str | None = None
    broker_transport_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    # TLS options (Celery's: ssl_cert_reqs, ssl_ca_certs, ssl_certfile, ssl_keyfile), or True:
    # taskq.tls. The store takes broker_use_ssl when it is on the broker's server.
    broker_use_ssl: dict[str, Any] | bool | None = None
    redis_backend_use_ssl: dict[str, Any] | bool | None = None
    broker_pool_limit: int | None = None
    # Connecting: a worker or beat retries at startup; how long a publish may wait (None: as
    # long as the broker's own window, Redis' `reconnect_timeout`, RabbitMQ's `publish_timeout`).
    broker_connection_retry_on_startup: bool = True
    broker_connection_max_retries: int | None = 100  # None: for ever
    broker_publish_timeout: float | None = None
    result_backend_transport_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    task_default_queue: str = defaults.QUEUE
    task_default_exchange: str = "taskq"
    task_default_priority: int | None = None
    task_default_rate_limit: str | None = None
    task_queue_max_priority: int | None = None
    # Given in Celery's shapes (names, {"name": ..., **options}, kombu Queue objects, or
    # {name: options}); kept as {name: options}.
    task_queues: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    # {task name or "*": {option: value}}, or a list of such maps; kept as a list.
    task_annotations: list[dict[str, dict[str, Any]]] = dataclasses.field(default_factory=list)
    task_track_started: bool = True
    task_routes: RouteSpec | list[RouteSpec] | None = None
    task_serializer: str = "json"
    task_compression: str | None = None
    accept_content: list[str] = dataclasses.field(default_factory=lambda: ["json"])
    # A key, or keys (the first signs, all verify): taskq.signing. Never in a repr.
    message_signing_key: str | bytes | list[str | bytes] | None = dataclasses.field(
        default=None, repr=False
    )
    message_signing_required: bool | None = None  # None: True once there is a key
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
    worker_processes: int = 1  # worker processes under a supervisor; 0: one per core
    worker_pool: str = defaults.THREAD_POOL  # where plain functions run: defaults.POOLS
    worker_pool_processes: int | None = None  # the process pool's size; None: one per core
    worker_max_tasks_per_child: int | None = None  # a pool (or worker) process is recycled
    worker_max_memory_per_child: int | None = None  # KB of resident memory: recycled past it
    worker_gc_threshold: int | None = defaults.GC_THRESHOLD  # None: Python's own
    worker_threads: int = 10
    worker_prefetch_multiplier: int = 4
    worker_shutdown_timeout: float = 30.0
    worker_heartbeat_interval: float = 2.0
    worker_metrics_port: int | None = None  # serve /metrics there (taskq[prometheus])
    worker_blocking_warning: float | None = 0.1  # seconds a task may block the event loop
    worker_log_format: str = "text"  # "json", or a logging format string as Celery's
    worker_send_task_events: bool = False  # task events (taskq.events); `taskq worker -E`
    task_send_sent_event: bool = False  # producers send task-sent events
    event_retention: float = 600.0  # seconds of task events Redis and RabbitMQ keep
    beat_schedule: dict[str, Any] = dataclasses.field(default_factory=dict)
    beat_max_loop_interval: float = 300.0
    beat_lease_ttl: float = 10.0
    timezone: str = "UTC"
    enable_utc: bool = True
    include: list[str] = dataclasses.field(default_factory=list)
    imports: list[str] = dataclasses.field(default_factory=list)

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "_observers":
            object.__setattr__(self, name, value)
            return
        if name not in _FIELDS:
            raise ConfigurationError(_unknown(name))
        object.__setattr__(self, name, _normalise(name, value))
        for observer in self._observers:
            observer(name)

    def observe(self, observer: Callable[[str], None]) -> None:
        """Call `observer(name)` after each change of a setting."""
        self._observers.append(observer)

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
        """Apply the `TASKQ_<SETTING>` variables. Other `TASKQ_*` variables belong to someone
        else (`TASKQ_HOME`, a deployment's `TASKQ_VERSION`) and are left alone, with a
        warning only when the name is one typo away from a setting."""
        environ = os.environ if environ is None else environ
        for key, raw in environ.items():
            if not key.startswith(ENV_PREFIX):
                continue
            name = key[len(ENV_PREFIX) :].lower()
            if name in _FIELDS:
                setattr(self, name, _parse_env(key, name, raw))
            elif key not in _IGNORED_VARIABLES:
                _IGNORED_VARIABLES.add(key)
                hint = did_you_mean(name, _FIELDS)
                level = logging.WARNING if hint else logging.DEBUG
                logger.log(level, "environment variable %s names no setting%s; ignored", key, hint)

    def validate(self) -> None:
        for name in ("worker_concurrency", "worker_threads", "worker_prefetch_multiplier"):
            if getattr(self, name) < 1:
                raise ConfigurationError(f"{name} must be at least 1")
        if type(self.worker_processes) is not int or self.worker_processes < 0:
            raise ConfigurationError(
                "worker_processes must be an integer >= 0 (0: one per core),"
                f" not {self.worker_processes!r}"
            )
        if self.worker_pool not in defaults.POOLS:
            hint = " (Celery's prefork is 'process')" if self.worker_pool == "prefork" else ""
            raise ConfigurationError(
                f"worker_pool must be 'thread' or 'process', not {self.worker_pool!r}{hint}"
            )
        for name in (
            "worker_pool_processes",
            "worker_max_tasks_per_child",
            "worker_max_memory_per_child",
            "worker_gc_threshold",
        ):
            value = getattr(self, name)
            if value is not None and (type(value) is not int or value < 1):
                raise ConfigurationError(f"{name} must be an integer >= 1 or None, not {value!r}")
        retention = self.event_retention
        if not isinstance(retention, int | float) or isinstance(retention, bool) or retention <= 0:
            raise ConfigurationError(
                f"event_retention must be a positive number of seconds, not {retention!r}"
            )
        heartbeat = self.worker_heartbeat_interval
        if not isinstance(heartbeat, int | float) or isinstance(heartbeat, bool) or heartbeat <= 0:
            raise ConfigurationError(
                f"worker_heartbeat_interval must be a positive number of seconds, not {heartbeat!r}"
            )
        self.signing()
        for setting in ("broker_use_ssl", "redis_backend_use_ssl"):
            TLSOptions.read(getattr(self, setting), setting)
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
        port = self.worker_metrics_port
        if port is not None and (type(port) is not int or not 1 <= port <= 65535):
            raise ConfigurationError(f"worker_metrics_port must be a port 1-65535, not {port!r}")
        if not is_timeout(self.worker_blocking_warning):
            raise ConfigurationError(
                "worker_blocking_warning must be a positive number of seconds or None, "
                f"not {self.worker_blocking_warning!r}"
            )
        log_format = self.worker_log_format
        if log_format not in ("text", "json") and not (
            isinstance(log_format, str) and "%(" in log_format
        ):
            raise ConfigurationError(
                "worker_log_format must be 'text', 'json' or a logging format string"
                f" such as Celery's, not {log_format!r}"
            )
        limit = self.broker_pool_limit
        if limit is not None and (type(limit) is not int or limit < 1):
            raise ConfigurationError(
                f"broker_pool_limit must be an integer >= 1 or None, not {limit!r}"
            )
        if self.task_compression is not None:
            compression_name(self.task_compression)
        if self.task_default_rate_limit is not None:
            parse_rate(self.task_default_rate_limit)
        if not self.enable_utc:
            raise ConfigurationError(
                "enable_utc=False is not supported by taskq: times are kept in UTC"
                " (set `timezone` for the crontab schedules)"
            )

    def signing(self) -> Signing | None:
        """How messages are signed and verified: None without a `message_signing_key`."""
        return Signing.from_setting(self.message_signing_key, self.message_signing_required)

    def default_queues(self) -> list[str]:
        """What a worker consumes when told no queues: `task_queues`, else the default."""
        return list(self.task_queues) or [self.task_default_queue]

    def annotations_for(self, task: str) -> dict[str, Any]:
        """The `task_annotations` options of `task`: its own map's, over those of "*"."""
        options: dict[str, Any] = {}
        for table in reversed(self.task_annotations):
            options.update(table.get("*", {}))
            options.update(table.get(task, {}))
        return options


_FIELDS: dict[str, dataclasses.Field[Any]] = {
    f.name: f for f in dataclasses.fields(Settings) if not f.name.startswith("_")
}
_PREFIXES = tuple({name.split("_", 1)[0] + "_" for name in _FIELDS})
_IGNORED_VARIABLES: set[str] = set()  # logged once per process, not at every conf.update()
_NAME_LISTS = ("accept_content", "include", "imports")
_SECONDS = ("result_expires", "task_time_limit", "task_soft_time_limit")


def is_timeout(seconds: object) -> bool:
    """Whether `seconds` is None (no timeout) or a positive number of seconds."""
    if seconds is None:
        return True
    return isinstance(seconds, int | float) and not isinstance(seconds, bool) and seconds > 0


def _unknown(name: str) -> str:
    if name in CELERY_UNSUPPORTED:
        return f"Celery setting {name!r} is not supported by taskq: {CELERY_UNSUPPORTED[name]}"
    return f"unknown setting {name!r}{did_you_mean(name, _FIELDS)}"


def checked_options(
    given: Mapping[str, Any] | None, known: Iterable[str], setting: str
) -> dict[str, Any]:
    """A copy of the options `given` in `setting` (a backend's transport options); a name
    that is not `known` is a `ConfigurationError`, never ignored."""
    options = dict(given or {})
    names = set(known)
    for name in sorted(options):
        if name not in names:
            raise ConfigurationError(
                f"{setting}: unknown option {name!r}{did_you_mean(name, names)}"
            )
    return options


def _normalise(name: str, value: Any) -> Any:
    if name in _SECONDS and isinstance(value, timedelta):
        return value.total_seconds()
    if name == "broker_pool_limit" and value == 0:
        return None  # Celery's 0: no pool, so no limit on connections either
    if name in _NAME_LISTS and isinstance(value, str | tuple | set | frozenset):
        return [value] if isinstance(value, str) else list(value)
    if name in ("broker_url", "result_backend"):
        return _url_list(value, name)
    if name == "task_queues":
        return _queues(value)
    if name == "task_annotations":
        return _annotations(value)
    return value


def _url_list(value: Any, name: str) -> Any:
    """A list of fail-over URLs as one `;`-separated string, Celery's other spelling of it."""
    if not isinstance(value, list | tuple):
        return value
    if not value or not all(isinstance(url, str) and url.strip() for url in value):
        raise ConfigurationError(f"{name} must be a URL or a list of URLs, not {value!r}")
    return ";".join(url.strip() for url in value)


def _queues(given: Any) -> dict[str, dict[str, Any]]:
    """`task_queues` as {name: options}, every option checked."""
    if given is None:
        return {}
    if isinstance(given, Mapping):
        given = [{"name": name, **dict(options or {})} for name, options in given.items()]
    if isinstance(given, str) or not isinstance(given, Iterable):
        raise ConfigurationError(f"task_queues must be a list of queues or a map, not {given!r}")
    queues: dict[str, dict[str, Any]] = {}
    for queue in given:
        options = _queue_options(queue)
        name = options.pop("name", None)
        if not isinstance(name, str) or not name:
            raise ConfigurationError(f"task_queues: a queue without a name: {queue!r}")
        for option in options:
            if option not in QUEUE_OPTIONS:
                hint = did_you_mean(option, QUEUE_OPTIONS)
                raise ConfigurationError(f"task_queues[{name!r}]: unknown option {option!r}{hint}")
        priority = options.get("max_priority")
        if priority is not None and (type(priority) is not int or not 1 <= priority <= 9):
            raise ConfigurationError(f"task_queues[{name!r}]: max_priority must be 1-9")
        if options.get("queue_type", "classic") not in ("classic", "quorum"):
            raise ConfigurationError(f"task_queues[{name!r}]: queue_type is classic or quorum")
        queues[name] = options
    return queues


def _queue_options(queue: Any) -> dict[str, Any]:
    """A queue named by its name, a map, or a kombu `Queue` (read by its attributes)."""
    if isinstance(queue, str):
        return {"name": queue}
    if isinstance(queue, Mapping):
        return dict(queue)
    if hasattr(queue, "name") and hasattr(queue, "queue_arguments"):
        exchange = getattr(getattr(queue, "exchange", None), "name", None)
        found = {
            "name": queue.name,
            "max_priority": getattr(queue, "max_priority", None),
            "queue_arguments": dict(queue.queue_arguments or {}) or None,
            "exchange": exchange or None,
            "routing_key": getattr(queue, "routing_key", None) or None,
        }
        if found["routing_key"] == queue.name and not exchange:
            found["routing_key"] = None
        return {key: value for key, value in found.items() if value is not None}
    raise ConfigurationError(f"task_queues: not a queue: {queue!r}")


def _annotations(given: Any) -> list[dict[str, dict[str, Any]]]:
    """`task_annotations` as a list of {task name or "*": {option: value}}."""
    if given is None:
        return []
    tables = [given] if isinstance(given, Mapping) else given
    if not isinstance(tables, list | tuple) or not all(isinstance(t, Mapping) for t in tables):
        raise ConfigurationError(
            "task_annotations must be {task name or '*': {option: value}} or a list of such"
            f" maps, not {given!r}"
        )
    checked: list[dict[str, dict[str, Any]]] = []
    for table in tables:
        for task, options in table.items():
            if not isinstance(task, str) or not isinstance(options, Mapping):
                raise ConfigurationError(
                    f"task_annotations: {task!r} must map to {{option: value}}, not {options!r}"
                )
        checked.append({task: dict(options) for task, options in table.items()})
    return checked


def _settings_of(obj: object) -> dict[str, Any]:
    """Public lowercase attributes that name settings; a misspelt one is an error."""
    found: dict[str, Any] = {}
    for name in dir(obj):
        if name.startswith("_") or not name.islower():
            continue
        value = getattr(obj, name)
        if isinstance(value, types.ModuleType | type):
            continue
        if name in _FIELDS or name in CELERY_UNSUPPORTED or name.startswith(_PREFIXES):
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
        name = key[len(prefix) :].lower()
        if key not in names and name not in CELERY_UNSUPPORTED:  # those: update() says why
            raise ConfigurationError(f"{key}: unknown setting{did_you_mean(key.upper(), names)}")
        found[name] = obj[key] if isinstance(obj, Mapping) else getattr(obj, key)
    return found


def _parse_env(key: str, name: str, raw: str) -> Any:
    annotation = str(_FIELDS[name].type)  # a string: this module uses postponed annotations
    try:
        if raw == "" and "None" in annotation:
            return None
        if "list[" in annotation and raw.lstrip().startswith("["):  # a key, or a list of keys
            return orjson.loads(raw)
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
