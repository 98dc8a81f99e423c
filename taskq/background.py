"""Background services of a long-lived connection object (a result store's notification reader).

A store is connected in one task (a FastAPI lifespan, say) and used from many others, so its
services cannot live in any caller's task group. They run in an anyio task group of their own,
hosted by an asyncio task that the first `start_soon` creates and `aclose()` cancels and awaits.

Imports nothing of taskq.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

import anyio
import anyio.abc

logger = logging.getLogger("taskq")

Service = Callable[[], Coroutine[Any, Any, Any]]


class ServiceGroup:
    """`start_soon(service)` runs `service()` until `aclose()`; a service should not return."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._host: asyncio.Task[None] | None = None
        self._group: anyio.abc.TaskGroup | None = None
        self._waiting: list[Service] = []

    def start_soon(self, service: Service) -> None:
        if self._group is not None:
            self._group.start_soon(service)
            return
        self._waiting.append(service)
        if self._host is None:
            self._host = asyncio.get_running_loop().create_task(self._serve(), name=self._name)

    async def _serve(self) -> None:
        async with anyio.create_task_group() as group:
            self._group = group
            for service in self._waiting:
                group.start_soon(service)
            self._waiting.clear()
            await anyio.sleep_forever()

    async def aclose(self) -> None:
        """Cancel the services and return once they have ended."""
        host, self._host, self._group = self._host, None, None
        self._waiting.clear()
        if host is None:
            return
        host.cancel()
        await asyncio.wait({host})  # not `await host`: the caller's own cancellation stays its own
        if not host.cancelled() and host.exception() is not None:
            logger.error("%s ended with an error", self._name, exc_info=host.exception())
