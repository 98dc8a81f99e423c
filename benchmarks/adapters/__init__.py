"""The libraries under test: where each adapter lives, its brokers, its virtualenv.

Plain data (standard library only): the suite reads it in taskq's virtualenv, the runner in
each library's own.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Library:
    name: str
    adapter: str  # "module:Class"
    brokers: tuple[str, ...]
    packages: tuple[str, ...]  # whose installed versions the results record
    peer: bool = True  # False: taskq, which every run has (--peers adds the others)

    def load(self) -> Any:
        module, _, attribute = self.adapter.partition(":")
        return getattr(importlib.import_module(module), attribute)


def _adapter(name: str, cls: str) -> str:
    return f"benchmarks.adapters.{name}_adapter:{cls}"


TASKQ = Library(
    "taskq",
    _adapter("taskq", "TaskqAdapter"),
    ("memory", "sqlite", "redis", "amqp"),
    ("taskq", "anyio", "orjson", "redis", "hiredis", "aio-pika"),
    peer=False,
)
PEERS = [
    Library(
        "celery",
        _adapter("celery", "CeleryAdapter"),
        ("redis", "amqp"),
        ("celery", "kombu", "amqp", "redis", "hiredis"),
    ),
    Library("arq", _adapter("arq", "ArqAdapter"), ("redis",), ("arq", "redis", "hiredis")),
    Library("saq", _adapter("saq", "SaqAdapter"), ("redis",), ("saq", "redis", "hiredis")),
    Library(
        "taskiq",
        _adapter("taskiq", "TaskiqAdapter"),
        ("redis", "amqp"),
        ("taskiq", "taskiq-redis", "taskiq-aio-pika", "redis", "hiredis"),
    ),
    Library("streaq", _adapter("streaq", "StreaqAdapter"), ("redis",), ("streaq", "coredis")),
    Library(
        "dramatiq",
        _adapter("dramatiq", "DramatiqAdapter"),
        ("redis", "amqp"),
        ("dramatiq", "pika", "redis", "hiredis"),
    ),
]
LIBRARIES = {library.name: library for library in [TASKQ, *PEERS]}

TASKQ_BROKER_MODULES = {
    "memory": "taskq.brokers.memory",
    "sqlite": "taskq.brokers.sqlite",
    "redis": "taskq.brokers.redis",
    "amqp": "taskq.brokers.amqp",
}


def taskq_broker_missing(broker: str) -> str | None:
    """Why taskq cannot run on `broker` yet (its module is not there), or None."""
    module = TASKQ_BROKER_MODULES[broker]
    return None if importlib.util.find_spec(module) else f"{module} is not written yet"
