"""A worker's side of the control plane: it hears the control channel, keeps the presence
table, and applies the commands meant for it (`taskq.worker.commands`, then the app's own,
registered with `@app.control.command`), replying on the reply channel when asked.

The worker greets itself on the channel: hearing its greeting proves that broadcasts
reach it, so it loads the stored revocations then, and needs no store lookups after.
"""

from __future__ import annotations

import inspect
import logging
import secrets
from base64 import b64decode
from typing import TYPE_CHECKING, Any

import anyio
import orjson

from taskq.brokers.base import Broker
from taskq.control import (
    BROADCAST_TASK,
    CONTROL_CHANNEL,
    REPLY_CHANNEL,
    decode_payload,
    greet_until_heard,
)
from taskq.message import peek_id
from taskq.worker import commands
from taskq.worker.broadcasts import BroadcastDelivery
from taskq.worker.presence import EVENTS, Presence
from taskq.worker.runtime import WorkerRuntime

if TYPE_CHECKING:
    from taskq.worker.worker import Worker

logger = logging.getLogger("taskq.worker")

GREETING = "hello"
REPLY_TIMEOUT = 5.0  # seconds a reply is given, even when the worker is stopping


class RemoteControl:
    """Runs (`run`) for the life of `worker`: presence, then the commands for it."""

    def __init__(self, worker: Worker, broker: Broker, runtime: WorkerRuntime) -> None:
        self.worker = worker
        self.broker = broker
        self.runtime = runtime
        self.presence = Presence(
            broker,
            worker.hostname,
            worker.app.conf.worker_heartbeat_interval,
            queues=lambda: list(worker.queues),
            active=lambda: len(worker.running_jobs()),
        )

    async def run(self) -> None:
        greeting = orjson.dumps({"op": GREETING, "token": secrets.token_hex(8)})
        heard = anyio.Event()
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(greet_until_heard, self.broker, CONTROL_CHANNEL, greeting, heard)
            async for payload in self.broker.subscribe(CONTROL_CHANNEL):
                if payload == greeting:
                    if not heard.is_set():
                        heard.set()
                        await _load_revocations(self.runtime)
                        tasks.start_soon(self.presence.run)
                    continue
                message = decode_payload(payload)
                if message is None:
                    logger.warning("Ignored a control message that is not a JSON object")
                elif message.get("op") == GREETING:
                    continue  # another worker's
                elif message.get("op") in EVENTS:
                    self.presence.hear(message)
                elif message.get("op") == BROADCAST_TASK:
                    self._take_broadcast_task(message)
                elif self._meant_for_me(message):
                    tasks.start_soon(self._apply, message)

    def _take_broadcast_task(self, message: dict[str, Any]) -> None:
        """Run a broadcast task's message here if this worker consumes its queue."""
        queue, body = message.get("queue"), message.get("body")
        if queue not in self.worker.queues:
            return
        try:
            raw = b64decode(body if isinstance(body, str) else "", validate=True)
        except ValueError:
            raw = b""
        if not raw:
            logger.warning("Ignored a broadcast task without a message body: %r", message)
            return
        try:
            self.worker.take(BroadcastDelivery(raw, queue, self.broker))
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            logger.warning("Dropped broadcast task %s: the worker is stopping", peek_id(raw))

    def _meant_for_me(self, message: dict[str, Any]) -> bool:
        destination = message.get("destination")
        return destination is None or (
            isinstance(destination, list) and self.worker.hostname in destination
        )

    async def _apply(self, message: dict[str, Any]) -> None:
        """Run the command; reply with its result, or with why it could not be applied."""
        op, arguments = message.get("op"), message.get("arguments")
        reply: dict[str, Any] = {
            "reply_to": message.get("reply_to"),
            "worker": self.worker.hostname,
        }
        try:
            if not isinstance(arguments, dict):
                raise ValueError("the command's arguments are not a JSON object")
            reply["result"] = await self._run_command(op, arguments)
        except Exception as exc:
            logger.warning("Control command %r failed: %s", op, exc)
            reply["error"] = f"{type(exc).__name__}: {exc}"
        if message.get("reply_to") is None:
            return
        reply["peers"] = self.presence.peers()
        try:  # shielded: `shutdown` is replied to while the worker stops
            with anyio.move_on_after(REPLY_TIMEOUT, shield=True):
                await self.broker.broadcast(REPLY_CHANNEL, orjson.dumps(reply, default=str))
        except Exception as exc:
            logger.warning("Could not reply to control command %r: %s", op, exc)

    async def _run_command(self, op: Any, arguments: dict[str, Any]) -> Any:
        builtin = commands.BUILTIN.get(op) if isinstance(op, str) else None
        if builtin is not None:
            return await builtin(self.worker, self.runtime, **arguments)
        custom = self.worker.app.control.commands.get(op) if isinstance(op, str) else None
        if custom is None:
            raise LookupError(f"unknown control command {op!r}")
        result = custom(self.worker, **arguments)
        return await result if inspect.isawaitable(result) else result


async def _load_revocations(runtime: WorkerRuntime) -> None:
    try:
        await runtime.load_revocations()
    except Exception:  # messages are still checked in the store, one batch at a time
        logger.exception("Could not load the stored revocations")
