"""An app's connections: one `Backends` per event loop the app is used on, closed with the loop.

Connections belong to the loop they were made on, so each loop gets its own: a second
`asyncio.run`, the loop thread of `taskq.sync`, a worker's loop beside a web server's. Each
loop's are closed by `close()` on that loop or, when the loop shuts down first (`asyncio.run`
cancels the tasks left on it), by a keeper task on that loop while it can still run the close.
A loop closed without that shutdown leaves its connections behind: they are dropped, never
used, when the next loop connects.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

import anyio

from taskq.backends import Backends


@dataclass(frozen=True, slots=True)
class _Connected:
    backends: Backends
    keeper: asyncio.Task[None]


class LoopConnections:
    """`await get()` connects on first use in each event loop; `close()` closes the running
    loop's connections."""

    def __init__(self, build: Callable[[], Backends]) -> None:
        self._build = build
        self._connected: dict[asyncio.AbstractEventLoop, _Connected] = {}
        self._connecting: dict[asyncio.AbstractEventLoop, anyio.Event] = {}

    async def get(self) -> Backends:
        connected = self._connected.get(asyncio.get_running_loop())
        return connected.backends if connected is not None else await self.connect()

    async def connect(self) -> Backends:
        """The running loop's backends, connected now unless they are already (idempotent)."""
        loop = asyncio.get_running_loop()
        while (connecting := self._connecting.get(loop)) is not None:
            await connecting.wait()
        connected = self._connected.get(loop)
        if connected is not None:
            return connected.backends
        self._connecting[loop] = connecting = anyio.Event()
        try:
            backends = self._build()
            await backends.connect()
            self._drop_closed_loops()
            keeper = loop.create_task(self._keep(loop, backends), name="taskq connections")
            self._connected[loop] = _Connected(backends, keeper)
            return backends
        finally:
            del self._connecting[loop]
            connecting.set()

    async def close(self) -> None:
        connected = self._connected.pop(asyncio.get_running_loop(), None)
        if connected is None:
            return
        connected.keeper.cancel()
        with anyio.CancelScope(shield=True):
            await connected.backends.close()

    async def _keep(self, loop: asyncio.AbstractEventLoop, backends: Backends) -> None:
        """Wait to be cancelled: by `close()` (nothing left to do), or by the loop's shutdown,
        which closes the connections here."""
        try:
            await loop.create_future()
        except asyncio.CancelledError:
            connected = self._connected.get(loop)
            if connected is not None and connected.backends is backends:
                del self._connected[loop]
                await backends.close()
            raise

    def _drop_closed_loops(self) -> None:
        # Another thread may add its loop meanwhile: iterate over a copy.
        for loop in [loop for loop in list(self._connected) if loop.is_closed()]:
            del self._connected[loop]
