"""examples/fastapi_app: POST answers 202 with a task id, GET shows state and result."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from support import eventually

from taskq.testing import running_worker

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "fastapi_app"


@pytest.fixture
def example(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[object]:
    monkeypatch.setenv("TASKQ_BROKER_URL", f"sqlite:///{tmp_path}/orders.db")
    monkeypatch.syspath_prepend(str(EXAMPLE))
    for name in ("main", "tasks"):
        sys.modules.pop(name, None)
    import main

    yield main
    for name in ("main", "tasks"):
        sys.modules.pop(name, None)


async def test_order_is_accepted_then_processed(example: object) -> None:
    api, app = example.api, example.app  # type: ignore[attr-defined]
    async with app, running_worker(app):
        transport = httpx.ASGITransport(app=api)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            created = await client.post("/orders", json={"order_id": "o-1", "amount": 12.5})
            assert created.status_code == 202
            task_id = created.json()["task_id"]

            async def paid() -> bool:
                view = (await client.get(f"/tasks/{task_id}")).json()
                return bool(view["state"] == "SUCCESS")

            await eventually(paid)
            view = (await client.get(f"/tasks/{task_id}")).json()
    assert view == {
        "id": task_id,
        "state": "SUCCESS",
        "result": {"order_id": "o-1", "charged": 12.5, "status": "paid"},
    }
