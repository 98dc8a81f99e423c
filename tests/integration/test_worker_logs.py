"""What a real `taskq worker` logs: JSON lines, tracebacks, the ready line (on RabbitMQ, whose
URL has a password to mask)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from servers import RabbitMQServer
from support import WorkerProcess

from taskq import TaskError, TaskQ

pytestmark = pytest.mark.integration

StartWorker = Callable[..., WorkerProcess]


@pytest.fixture
def broker_url(rabbitmq_server: RabbitMQServer) -> str:
    return rabbitmq_server.url


@pytest.fixture
def settings(tmp_path: Path) -> dict[str, str]:
    return {
        "result_backend": f"sqlite:///{tmp_path}/results.db",
        "task_default_queue": f"logs-{uuid.uuid4().hex[:10]}",
    }


@pytest.fixture
def worker_env(worker_env: dict[str, str], settings: dict[str, str]) -> dict[str, str]:
    return {**worker_env, **{f"TASKQ_{name.upper()}": value for name, value in settings.items()}}


@pytest.fixture
async def producer(broker_url: str, settings: dict[str, str]) -> AsyncIterator[TaskQ]:
    async with TaskQ("producer", broker=broker_url, **settings) as app:
        yield app


def json_lines(worker: WorkerProcess) -> list[dict[str, Any]]:
    """Every line the worker wrote, each parsed (a line that is no JSON object fails)."""
    return [orjson.loads(line) for line in worker.output().splitlines()]


async def test_json_logs_name_the_task_of_each_line(
    producer: TaskQ, start_worker: StartWorker, settings: dict[str, str]
) -> None:
    worker = start_worker("--log-format", "json", "-n", "logs@test")
    traceparent = f"00-{'ab' * 16}-{'cd' * 8}-01"
    inside = await producer.send_task(
        "itest.log_inside", ["hi"], headers={"traceparent": traceparent}
    )
    failed = await producer.send_task("itest.fail", ["boom"])
    buried = await producer.send_task("itest.fail_to_dead_letters", ["again"])
    await inside.get(timeout=15)
    for result in (failed, buried):
        with pytest.raises(TaskError):
            await result.get(timeout=15)
    worker.stop()

    lines = json_lines(worker)
    assert all(line["worker"] == "logs@test" for line in lines)
    assert all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    queue = settings["task_default_queue"]
    [ready] = [line for line in lines if " ready: " in line["message"]]
    assert "broker amqp://guest:***@127.0.0.1:" in ready["message"]
    assert "guest:guest" not in worker.output()
    assert f"results {settings['result_backend']}" in ready["message"]
    registered = ready["message"].partition(", tasks: ")[2].split(", ")
    assert registered == sorted(registered) and "itest.log_inside" in registered

    def about(task_id: str) -> list[dict[str, Any]]:
        return [line for line in lines if line.get("task_id") == task_id]

    logged_inside = [line for line in about(inside.id) if line["logger"] == "itest"]
    assert [line["message"] for line in logged_inside] == ["inside: hi"]
    assert (
        logged_inside[0] | {"task": "itest.log_inside", "queue": queue, "retries": 0}
        == (logged_inside[0])
    )
    assert logged_inside[0]["trace_id"] == "ab" * 16
    [failure] = [line for line in about(failed.id) if line["level"] == "error"]
    assert failure["message"].startswith(f"Task itest.fail[{failed.id}] raised ValueError: boom")
    assert "dead-lettered" not in failure["message"]
    assert failure["traceback"].endswith("ValueError: boom")
    assert 'in fail\n    raise ValueError("boom")' in failure["traceback"]
    assert "trace_id" not in failure
    [burial] = [line for line in about(buried.id) if line["level"] == "error"]
    assert burial["message"].endswith("; retries exhausted: dead-lettered")
    assert burial["task"] == "itest.fail_to_dead_letters"
