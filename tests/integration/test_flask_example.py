"""examples/flask_app: a real `taskq worker` on SQLite runs what the Flask views publish with
`delay_sync()`; POST answers 202 with a task id, GET shows the state and then the result."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support import WorkerProcess, wait_for

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "flask_app"
MODULES = ("main", "tasks")  # the FastAPI example's are named alike


@pytest.fixture
def example(monkeypatch: pytest.MonkeyPatch, broker_url: str) -> Iterator[Any]:
    """The example's `main` module, on the broker the worker uses."""
    monkeypatch.setenv("TASKQ_BROKER_URL", broker_url)
    monkeypatch.syspath_prepend(str(EXAMPLE))
    for name in MODULES:
        sys.modules.pop(name, None)
    import main

    yield main
    for name in MODULES:
        sys.modules.pop(name, None)


def test_a_report_is_accepted_then_built(
    example: Any, start_worker: Callable[..., WorkerProcess]
) -> None:
    start_worker(app="tasks:app", cwd=EXAMPLE)
    client = example.web.test_client()
    created = client.post("/reports", json={"user": "ada", "month": "2026-11"})
    assert created.status_code == 202
    task_id = created.get_json()["task_id"]

    def view() -> dict[str, Any]:
        body: dict[str, Any] = client.get(f"/tasks/{task_id}").get_json()
        return body

    wait_for(lambda: view()["state"] == "SUCCESS", timeout=30)
    assert view() == {
        "id": task_id,
        "state": "SUCCESS",
        "result": {"user": "ada", "month": "2026-11", "rows": 30},
    }


def test_a_bad_body_is_refused_and_nothing_is_published(example: Any) -> None:
    client = example.web.test_client()
    refused = client.post("/reports", json={"user": "ada"})
    assert refused.status_code == 400
    assert refused.get_json() == {"error": 'expected a JSON body {"user": "...", "month": "..."}'}

    async def queued() -> int:
        broker = await example.app.connected_broker()
        return int(await broker.queue_length(example.app.conf.task_default_queue))

    assert asyncio.run(queued()) == 0
