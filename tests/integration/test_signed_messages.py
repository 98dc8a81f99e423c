"""Signed messages with a real `taskq worker` on SQLite and Redis: a signed round trip; an
unsigned, a tampered and a foreign-key message written straight into the broker are
dead-lettered with "bad signature", FAILURE recorded, the worker carrying on; what workers
publish (retries, chains, chords) and beat's ticks are signed; key rotation; a forged dead
letter is not replayed (its replay would sign it)."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from raw_publish import publish_raw
from support import WorkerProcess, eventually, worker_broker_url

from taskq import Signature, TaskError, TaskQ, chord, dlq, signature, states
from taskq.beat import Beat
from taskq.message import Message, encode
from taskq.signing import Signing
from taskq.testing import running_worker

pytestmark = pytest.mark.integration

StartWorker = Callable[..., WorkerProcess]

OLD_KEY = "old-" + "1" * 40
NEW_KEY = "new-" + "2" * 40
FOREIGN_KEY = "foreign-" + "3" * 40


@pytest.fixture(params=["sqlite", "redis"])
def kind(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:12]}:"


@pytest.fixture
def queue() -> str:
    return f"signed-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def broker_url(kind: str, request: pytest.FixtureRequest, tmp_path: Path, prefix: str) -> str:
    return worker_broker_url(kind, request, tmp_path, prefix)


@pytest.fixture
def worker_env(worker_env: dict[str, str], queue: str) -> dict[str, str]:
    """Workers verify with both keys (the rotation's middle step) and consume the queue."""
    keys = json.dumps([NEW_KEY, OLD_KEY])
    return {**worker_env, "TASKQ_TASK_DEFAULT_QUEUE": queue, "TASKQ_MESSAGE_SIGNING_KEY": keys}


def producer(broker_url: str, queue: str, key: str | list[str] | None) -> TaskQ:
    return TaskQ(
        "producer",
        broker=broker_url,
        task_default_queue=queue,
        message_signing_key=key,
        broker_transport_options={"polling_interval": 0.05},
    )


@pytest.fixture
async def signed(broker_url: str, queue: str) -> AsyncIterator[TaskQ]:
    async with producer(broker_url, queue, NEW_KEY) as app:
        yield app


def envelope(task_id: str, signing: Signing | None) -> bytes:
    return encode(Message(id=task_id, task="itest.add", args=[1, 2]), signing=signing)


async def test_signed_messages_run_and_forgeries_are_dead_lettered(
    kind: str, signed: TaskQ, start_worker: StartWorker, broker_url: str, prefix: str, queue: str
) -> None:
    worker = start_worker()
    assert await (await signed.send_task("itest.add", args=[2, 3])).get(timeout=20) == 5
    good = envelope("tampered", Signing([NEW_KEY.encode()]))
    tampered = good.replace(b"[1,2]", b"[1,9]")
    assert tampered != good
    forgeries = {
        "unsigned": envelope("unsigned", None),
        "tampered": tampered,
        "foreign": envelope("foreign", Signing([FOREIGN_KEY.encode()])),
    }
    broker = await signed.connected_broker()
    await publish_raw(kind, broker, broker_url, prefix, queue, list(forgeries.values()))

    async def all_dead_lettered() -> bool:
        return await broker.dead_letter_length(queue) == len(forgeries)

    await eventually(all_dead_lettered)
    letters = await broker.dead_letters(queue)
    assert {letter.body for letter in letters} == set(forgeries.values())  # kept as they came
    assert all("bad signature" in letter.reason for letter in letters)

    async def all_failed() -> bool:
        found = [await signed.AsyncResult(task_id).status() for task_id in forgeries]
        return found == [states.FAILURE] * len(forgeries)

    await eventually(all_failed)
    assert worker.output().count("bad signature") == len(forgeries)  # one line each
    assert NEW_KEY not in worker.output() and OLD_KEY not in worker.output()
    assert await (await signed.send_task("itest.add", args=[4, 5])).get(timeout=20) == 9
    assert worker.process.poll() is None

    replayed, problems = await dlq.replay(signed, queue)
    assert replayed == 0 and len(problems) == len(forgeries)
    assert all("bad signature" in problem for problem in problems)


async def test_what_workers_publish_is_signed_too(signed: TaskQ, start_worker: StartWorker) -> None:
    """The worker refuses unsigned messages, so a retry, a chain's next step or a chord's
    callback it published unsigned would be dead-lettered instead of giving these results."""
    start_worker()

    def add(*args: int) -> Signature[int]:
        return signature("itest.add", list(args), app=signed)

    assert await (await signed.send_task("itest.retry_once")).get(timeout=20) == 1
    assert await (await (add(1, 2) | add(3)).apply_async()).get(timeout=20) == 6
    tsum = signature("itest.tsum", app=signed)
    assert (
        await (await chord([add(i, i) for i in range(5)], tsum).apply_async()).get(timeout=20) == 20
    )
    broker = await signed.connected_broker()
    assert await broker.dead_letter_length(signed.conf.task_default_queue) == 0


async def test_rotation_the_first_key_signs_and_every_key_verifies(
    start_worker: StartWorker, broker_url: str, queue: str
) -> None:
    start_worker()
    async with producer(broker_url, queue, OLD_KEY) as old:
        assert await (await old.send_task("itest.add", args=[1, 1])).get(timeout=20) == 2
    async with producer(broker_url, queue, [NEW_KEY, OLD_KEY]) as rotated:
        assert await (await rotated.send_task("itest.add", args=[2, 2])).get(timeout=20) == 4
    async with producer(broker_url, queue, FOREIGN_KEY) as foreign:
        refused = await foreign.send_task("itest.add", args=[3, 3])
        with pytest.raises(TaskError, match="bad signature: it does not verify with any key"):
            await refused.get(timeout=20)


async def test_beat_signs_what_it_sends(tmp_path: Path) -> None:
    """A worker of the same app refuses unsigned messages: the ticks run only if beat
    signed them."""
    app = producer(f"sqlite:///{tmp_path}/beat.db", "beat", NEW_KEY)
    ticks: list[float] = []

    @app.task(name="signed.tick", bind=True)
    async def tick(self: Any) -> None:
        ticks.append(self.request.headers["beat_scheduled_at"])

    app.conf.beat_schedule = {"tick": {"task": "signed.tick", "schedule": 0.2}}
    async with app, running_worker(app):
        with anyio.fail_after(20):
            async with anyio.create_task_group() as beats:
                beats.start_soon(Beat(app, lease_ttl=1).run)
                await eventually(lambda: _at_least(ticks, 2))
                beats.cancel_scope.cancel()
        assert await (await app.connected_broker()).dead_letter_length("beat") == 0


async def _at_least(ticks: list[float], count: int) -> bool:
    return len(ticks) >= count
