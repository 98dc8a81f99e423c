"""Task events (`worker_send_task_events`, `task_send_sent_event`) as `app.events.receive`
reads them, on every broker, from a worker in this process."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
from support import eventually

from taskq import TaskQ
from taskq.events import encode_batch
from taskq.testing import running_worker

pytestmark = pytest.mark.integration

COMMON = {"type", "uuid", "hostname", "timestamp", "pid", "clock"}


def make_app(app_settings: dict[str, Any], **settings: Any) -> TaskQ:
    app = TaskQ("events", **app_settings, **settings)

    @app.task(name="ev.add")
    async def add(a: int, b: int) -> int:
        return a + b

    @app.task(name="ev.boom")
    async def boom() -> None:
        raise ValueError("boom")

    @app.task(name="ev.sleep")
    async def sleep(seconds: float) -> None:
        await anyio.sleep(seconds)

    @app.task(name="ev.again", bind=True, max_retries=1)
    async def again(self: Any) -> str:
        if self.request.retries == 0:
            raise self.retry(exc=KeyError("not yet"), countdown=0)
        return "done"

    return app


@asynccontextmanager
async def collecting(app: TaskQ) -> AsyncIterator[list[dict[str, Any]]]:
    """The events received while in the block, the subscription in place before it starts."""
    events: list[dict[str, Any]] = []
    ready = anyio.Event()

    async def collect() -> None:
        async for event in app.events.receive(ready=ready):
            events.append(event)

    async with anyio.create_task_group() as tg:
        tg.start_soon(collect)
        with anyio.fail_after(15):
            await ready.wait()
        yield events
        tg.cancel_scope.cancel()


def of(events: list[dict[str, Any]], task_id: str) -> list[dict[str, Any]]:
    return [event for event in events if event["uuid"] == task_id]


def types(events: list[dict[str, Any]], task_id: str) -> list[str]:
    return [event["type"] for event in of(events, task_id)]


async def test_task_events_in_order_with_their_fields(app_settings: dict[str, Any]) -> None:
    app = make_app(app_settings, worker_send_task_events=True, task_send_sent_event=True)
    async with app, collecting(app) as events, running_worker(app, hostname="ev@host") as worker:
        added = await app.send_task("ev.add", args=[2, 3])
        failed = await app.send_task("ev.boom")
        retried = await app.send_task("ev.again")
        unknown = await app.send_task("ev.nobody")

        async def all_ended() -> bool:
            return (
                types(events, added.id)[-1:] == ["task-succeeded"]
                and types(events, failed.id)[-1:] == ["task-failed"]
                and types(events, retried.id)[-1:] == ["task-succeeded"]
                and types(events, unknown.id)[-1:] == ["task-rejected"]
            )

        await eventually(all_ended)

        run = ["task-sent", "task-received", "task-started"]
        assert types(events, added.id) == [*run, "task-succeeded"]
        assert types(events, failed.id) == [*run, "task-failed"]
        assert types(events, retried.id) == [*run, "task-retried", *run[1:], "task-succeeded"]
        assert types(events, unknown.id) == ["task-sent", "task-rejected"]

        for event in events:
            assert event.keys() >= COMMON
        sent, received, started, succeeded = of(events, added.id)
        assert (sent["name"], sent["args"], sent["queue"]) == (
            "ev.add",
            "[2, 3]",
            app.conf.task_default_queue,
        )
        assert (received["name"], received["args"], received["kwargs"], received["queue"]) == (
            "ev.add",
            "[2, 3]",
            "{}",
            app.conf.task_default_queue,
        )
        assert {received["hostname"], started["hostname"], succeeded["hostname"]} == {
            worker.hostname
        }
        assert succeeded["result"] == "5" and succeeded["runtime"] >= 0
        assert received["clock"] < started["clock"] < succeeded["clock"]
        assert received["timestamp"] <= started["timestamp"] <= succeeded["timestamp"]

        failure = of(events, failed.id)[-1]
        assert failure["exception"] == "ValueError('boom')"
        assert "raise ValueError" in failure["traceback"]
        retry = of(events, retried.id)[3]
        assert retry["exception"] == "KeyError('not yet')"

        rejected = of(events, unknown.id)[-1]
        assert rejected["dead_lettered"] is True and rejected["requeue"] is False
        assert "ev.nobody" in rejected["reason"]


async def test_revoked_before_it_runs(app_settings: dict[str, Any]) -> None:
    app = make_app(app_settings, worker_send_task_events=True)
    async with app, collecting(app) as events:
        result = await app.send_task("ev.add", args=[1, 1])
        await app.control.revoke(result.id)
        async with running_worker(app):
            await eventually(
                lambda: _async(types(events, result.id) == ["task-received", "task-revoked"])
            )
        revoked = of(events, result.id)[-1]
        assert (revoked["terminated"], revoked["expired"]) == (False, False)


async def test_terminated_while_running(app_settings: dict[str, Any]) -> None:
    app = make_app(app_settings, worker_send_task_events=True)
    async with app, collecting(app) as events, running_worker(app):
        result = await app.send_task("ev.sleep", args=[60])
        await eventually(lambda: _async("task-started" in types(events, result.id)))
        await app.control.revoke(result.id, terminate=True)
        await eventually(lambda: _async("task-revoked" in types(events, result.id)))
        assert types(events, result.id) == ["task-received", "task-started", "task-revoked"]
        assert of(events, result.id)[-1]["terminated"] is True


async def test_events_are_batched(app_settings: dict[str, Any]) -> None:
    """Tasks ending together share a publish: far fewer publishes than events."""
    app = make_app(app_settings, worker_send_task_events=True)
    async with app, collecting(app) as events:
        broker = await app.connected_broker()
        publishes = 0
        publish = broker.publish_events

        async def counted(payload: bytes) -> None:
            nonlocal publishes
            publishes += 1
            await publish(payload)

        broker.publish_events = counted  # type: ignore[method-assign]
        results = [await app.send_task("ev.add", args=[i, i]) for i in range(200)]
        async with running_worker(app):
            await eventually(
                lambda: _async(all(types(events, r.id)[-1:] == ["task-succeeded"] for r in results))
            )
        assert len(events) >= 600
        assert publishes < len(events) / 10


async def test_no_events_unless_asked(app_settings: dict[str, Any]) -> None:
    """Without the settings nothing is sent: a task's run shows no event, while a greeting
    of the receiver's own on the same channel still arrives."""
    app = make_app(app_settings)
    async with app, collecting(app) as events, running_worker(app):
        result = await app.send_task("ev.add", args=[1, 2])
        assert await result.get(timeout=15) == 3
        marker = await app.send_task("ev.add", args=[0, 0])
        broker = await app.connected_broker()
        row = ("task-started", marker.id, 0.0)
        await broker.publish_events(encode_batch("x", 1, 1, [row]))
        await eventually(lambda: _async(bool(of(events, marker.id))))
        assert of(events, result.id) == []


async def _async(value: bool) -> bool:
    return value


async def test_a_late_reader_reads_back_what_the_broker_keeps(app_settings: dict[str, Any]) -> None:
    """On Redis and RabbitMQ a reader started after the task ran reads its events back with
    `since` (within `event_retention`); the other brokers' events are live only."""
    app = make_app(app_settings, worker_send_task_events=True)
    async with app:
        async with running_worker(app):
            result = await app.send_task("ev.add", args=[4, 4])
            assert await result.get(timeout=15) == 8
        keeps = (await app.connected_broker()).KEEPS_EVENTS
        assert keeps == app_settings["broker"].startswith(("redis", "amqp"))
        events: list[dict[str, Any]] = []
        ready = anyio.Event()

        async def collect() -> None:
            async for event in app.events.receive(ready=ready, since=60):
                events.append(event)

        async with anyio.create_task_group() as tg:
            tg.start_soon(collect)
            with anyio.fail_after(15):
                await ready.wait()
            if keeps:
                await eventually(lambda: _async(len(of(events, result.id)) == 3))
                assert types(events, result.id) == [
                    "task-received",
                    "task-started",
                    "task-succeeded",
                ]
            else:  # a later task's events come, the earlier one's never did
                async with running_worker(app):
                    later = await app.send_task("ev.add", args=[0, 1])
                    await eventually(lambda: _async("task-succeeded" in types(events, later.id)))
                assert of(events, result.id) == []
            tg.cancel_scope.cancel()
