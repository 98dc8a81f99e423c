"""`taskq dashboard`: the dashboard of an app on uvicorn, until SIGINT or SIGTERM."""

from __future__ import annotations

import ipaddress
import logging
from typing import TYPE_CHECKING

import anyio
import uvicorn

from taskq.contrib.dashboard.server import create_app
from taskq.errors import CommandError

if TYPE_CHECKING:
    from taskq.app import TaskQ

logger = logging.getLogger("taskq.dashboard")

SHUTDOWN_GRACE = 2  # seconds open pages' live streams get to close on shutdown


def is_loopback(address: str) -> bool:
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


async def serve(
    app: TaskQ,
    *,
    address: str,
    port: int,
    auth: str | None,
    auth_token: str | None,
    no_auth: bool,
    read_only: bool,
    max_tasks: int,
    inspect_interval: float,
) -> None:
    if no_auth and not is_loopback(address):
        raise CommandError(
            f"--no-auth is for loopback only, not --address {address}: pass --auth or --auth-token"
        )
    if not (auth or auth_token or no_auth):
        raise CommandError(
            "the dashboard needs --auth user:password or --auth-token TOKEN"
            " (or --no-auth, on loopback only)"
        )
    try:
        dashboard = create_app(
            app,
            auth=auth,
            auth_token=auth_token,
            no_auth=no_auth,
            read_only=read_only,
            max_tasks=max_tasks,
            inspect_interval=inspect_interval,
        )
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    config = uvicorn.Config(
        dashboard,
        host=address,
        port=port,
        log_level="warning",
        lifespan="on",
        timeout_graceful_shutdown=SHUTDOWN_GRACE,
    )
    server = uvicorn.Server(config)
    async with app, anyio.create_task_group() as tg:
        tg.start_soon(server.serve)
        while not server.started:
            if server.should_exit:
                return
            await anyio.sleep(0.05)
        shown = f"[{address}]" if ":" in address else address
        logger.info(
            "Dashboard ready on http://%s:%d/%s", shown, port, " (read-only)" if read_only else ""
        )
