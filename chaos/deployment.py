"""Where a scenario's tasks go: broker, result store, transport options and queue, handed to
the worker subprocesses as TASKQ_* variables and to the harness's own producer app."""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chaos.tasks import RECORDS_VARIABLE
from taskq import TaskQ

POLLING_INTERVAL = 0.05  # SQLite consumers poll: short, so a drain is not paced by it


@dataclass(frozen=True)
class Deployment:
    kind: str  # sqlite | redis | amqp | quorum
    broker_url: str
    backend_url: str
    queue: str
    transport: dict[str, Any] = field(default_factory=dict)

    def worker_env(self, records: Path, **settings: Any) -> dict[str, str]:
        """The environment of a worker or beat subprocess; `settings` become TASKQ_* too."""
        env = {key: value for key, value in os.environ.items() if not key.startswith("TASKQ_")}
        env.update(
            TASKQ_BROKER_URL=self.broker_url,
            TASKQ_RESULT_BACKEND=self.backend_url,
            TASKQ_BROKER_TRANSPORT_OPTIONS=json.dumps(self.transport),
            TASKQ_TASK_DEFAULT_QUEUE=self.queue,
        )
        for name, value in settings.items():
            env[f"TASKQ_{name.upper()}"] = value if isinstance(value, str) else json.dumps(value)
        env[RECORDS_VARIABLE] = str(records)
        return env

    def producer(self) -> TaskQ:
        """The harness's app: publishes by task name, reads states and dead letters."""
        return TaskQ(
            "chaos-producer",
            broker=self.broker_url,
            backend=self.backend_url,
            broker_transport_options=self.transport,
            task_default_queue=self.queue,
        )


def new_queue(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def sqlite_database(directory: Path) -> Path:
    return directory / "taskq.db"


def on_sqlite(directory: Path, queue: str, visibility_timeout: float) -> Deployment:
    url = f"sqlite:///{sqlite_database(directory)}"
    transport = {"visibility_timeout": visibility_timeout, "polling_interval": POLLING_INTERVAL}
    return Deployment("sqlite", url, url, queue, transport)


def on_redis(url: str, queue: str, visibility_timeout: float) -> Deployment:
    return Deployment("redis", url, url, queue, {"visibility_timeout": visibility_timeout})


def on_rabbitmq(
    url: str, directory: Path, queue: str, *, quorum: bool = False, **transport: Any
) -> Deployment:
    """RabbitMQ with its default store, SQLite (a file of the scenario's own)."""
    transport["polling_interval"] = POLLING_INTERVAL
    if quorum:
        transport["quorum_queues"] = [queue]
    kind = "quorum" if quorum else "amqp"
    return Deployment(kind, url, f"sqlite:///{directory / 'results.db'}", queue, transport)
