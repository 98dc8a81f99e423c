"""taskq.deadlines: one timer per loop cancels what outlives its deadline, and only that."""

from __future__ import annotations

import asyncio
import gc
import socket

import pytest
from redis.exceptions import TimeoutError as RedisTimeoutError

from taskq import redis_db
from taskq.deadlines import Deadlines


async def _operation(deadlines: Deadlines, seconds: float) -> str:
    watch = deadlines.start()
    try:
        await asyncio.sleep(seconds)
        return "done"
    except asyncio.CancelledError:
        if watch.expired():
            return "expired"
        raise
    finally:
        watch.stop()


async def test_an_operation_past_its_deadline_is_cancelled_between_timeout_and_resolution() -> None:
    deadlines = Deadlines(0.05, resolution=0.02)
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await _operation(deadlines, 10) == "expired"
    assert 0.05 <= loop.time() - started < 1.0
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]


async def test_an_operation_that_ends_in_time_is_left_alone() -> None:
    deadlines = Deadlines(0.2, resolution=0.02)
    assert await asyncio.gather(*(_operation(deadlines, 0.01) for _ in range(50))) == ["done"] * 50
    await asyncio.sleep(0.3)  # the timer has looked again and stopped: nothing to cancel


async def test_a_cancellation_from_outside_is_not_the_deadlines() -> None:
    deadlines = Deadlines(10, resolution=0.02)
    task = asyncio.create_task(_operation(deadlines, 10))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_redis_that_never_answers_is_a_transient_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(redis_db, "_DEADLINES", Deadlines(0.2, resolution=0.05))
    mute = socket.create_server(("127.0.0.1", 0))  # accepts (the backlog), never replies
    try:
        port = mute.getsockname()[1]
        connection = redis_db.RedisConnection(
            redis_db.RedisSettings.parse(f"redis://127.0.0.1:{port}/0", None)
        )
        try:
            for commands in ([("GET", "k")], [("GET", "k"), ("GET", "j")]):
                with pytest.raises(RedisTimeoutError, match="did not answer"):
                    await redis_db._send(connection.client, commands)
        finally:
            await connection.aclose()
    finally:
        mute.close()


def test_a_finished_event_loop_is_not_kept() -> None:
    deadlines = Deadlines(10, resolution=0.01)
    asyncio.run(_operation(deadlines, 0))
    gc.collect()
    assert not deadlines._loops
