"""What a scenario runs with: its own directory, its size (full or --short), the run's
shared RabbitMQ, and an exit stack that stops everything it started, whatever happens."""

from __future__ import annotations

import random
import sys
from collections.abc import Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from chaos import servers
from chaos.deployment import Deployment
from chaos.processes import Processes
from chaos.records import Records
from taskq import TaskQ

T = TypeVar("T")


@dataclass
class Context:
    name: str
    short: bool
    directory: Path
    rabbitmq: servers.SharedRabbitMQ
    stack: AsyncExitStack
    rng: random.Random

    def log(self, message: str) -> None:
        print(f"[chaos] {self.name}: {message}", file=sys.stderr, flush=True)

    def size(self, full: T, short: T) -> T:
        """The figure for this run's size: `full`, or `short` with --short."""
        return short if self.short else full

    def path(self, name: str) -> Path:
        path = self.directory / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    async def redis(self, *, aof: bool = False) -> servers.Server:
        """A Redis of this scenario's own, stopped when it ends."""
        server = await servers.start_redis(self.path("redis"), aof=aof)
        self.stack.callback(server.stop)
        return server

    async def private_rabbitmq(self) -> servers.Server:
        """A RabbitMQ node of this scenario's own, for one that restarts it."""
        server = await servers.start_rabbitmq(self.path("rabbitmq"))
        self.stack.callback(server.stop)
        return server

    async def producer(self, deployment: Deployment) -> TaskQ:
        app = deployment.producer()
        await self.stack.enter_async_context(app)
        return app

    def records(self) -> Records:
        return Records(self.path("records"))

    def workers(self, deployment: Deployment, args: Sequence[str]) -> Processes:
        """Worker processes for `deployment` (none started yet); all stopped at the end."""
        env = deployment.worker_env(self.path("records"))
        workers = Processes("worker", env, self.path("logs"), ["-Q", deployment.queue, *args])
        self.stack.callback(workers.stop_all)
        return workers

    def beats(self, deployment: Deployment, **settings: Any) -> Processes:
        """Beat processes for `deployment` with these settings (TASKQ_* variables)."""
        env = deployment.worker_env(self.path("records"), **settings)
        beats = Processes("beat", env, self.path("logs"))
        self.stack.callback(beats.stop_all)
        return beats
