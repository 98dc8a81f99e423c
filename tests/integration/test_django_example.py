"""examples/django_app: a view creates an order in a transaction and publishes its confirmation
with `transaction.on_commit(... apply_async_sync ...)`; a real `taskq worker` on SQLite
confirms it through Django's ORM. Django's test client, real transactions on a real SQLite
database: nothing is in the broker until the commit, and a rollback publishes nothing.

Django is set up once per process, so the site (its database, its broker) is the module's.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.db import transaction
from django.test import Client
from support import WorkerProcess, wait_for

from taskq import TaskQ

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "django_app"


@dataclass(frozen=True)
class Site:
    app: TaskQ
    broker_url: str
    database: Path


class Rollback(Exception):
    """Raised to leave a transaction by rolling it back."""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    directory = tmp_path_factory.mktemp("django")
    database, broker_url = directory / "db.sqlite3", f"sqlite:///{directory}/taskq.db"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DJANGO_SETTINGS_MODULE", "proj.settings")
        patch.setenv("DJANGO_DB", str(database))
        patch.setenv("TASKQ_BROKER_URL", broker_url)
        patch.syspath_prepend(str(EXAMPLE))
        from proj.taskq_app import app  # sets Django up

        call_command("migrate", verbosity=0)
        yield Site(app, broker_url, database)


@pytest.fixture
def broker_url(site: Site) -> str:
    return site.broker_url


@pytest.fixture
def worker_env(worker_env: dict[str, str], site: Site) -> dict[str, str]:
    return {
        **worker_env,
        "DJANGO_SETTINGS_MODULE": "proj.settings",
        "DJANGO_DB": str(site.database),
    }


def queued(app: TaskQ) -> int:
    """How many messages wait in the app's queue, asked on a new event loop."""

    async def length() -> int:
        broker = await app.connected_broker()
        return int(await broker.queue_length(app.conf.task_default_queue))

    return asyncio.run(length())


def post_order(client: Client, body: object) -> Any:
    return client.post("/orders", data=json.dumps(body), content_type="application/json")


def test_an_order_is_published_when_its_transaction_commits_then_confirmed(
    site: Site, start_worker: Callable[..., WorkerProcess]
) -> None:
    client = Client()
    with transaction.atomic():  # the request's transaction: the view's own is nested in it
        created = post_order(client, {"item": "tea", "quantity": 3})
        assert created.status_code == 202
        assert queued(site.app) == 0  # not before the commit
    assert queued(site.app) == 1
    order_id, task_id = created.json()["order_id"], created.json()["task_id"]

    start_worker(app="proj.taskq_app:app", cwd=EXAMPLE)
    wait_for(lambda: client.get(f"/orders/{order_id}").json()["status"] == "confirmed", 30)
    result = site.app.SyncResult(task_id)
    assert result.get(timeout=20) == {"order_id": order_id, "status": "confirmed"}
    assert client.get(f"/orders/{order_id}").json() == {
        "id": order_id,
        "item": "tea",
        "quantity": 3,
        "status": "confirmed",
        "task_id": task_id,
    }
    wait_for(lambda: queued(site.app) == 0)  # acked (acks_late: after the run)


def test_a_rolled_back_order_publishes_nothing(site: Site) -> None:
    client = Client()
    assert queued(site.app) == 0
    with pytest.raises(Rollback), transaction.atomic():
        created = post_order(client, {"item": "coffee", "quantity": 1})
        assert created.status_code == 202
        raise Rollback
    assert queued(site.app) == 0
    assert client.get(f"/orders/{created.json()['order_id']}").status_code == 404


@pytest.mark.parametrize("body", [{"item": "tea"}, {"item": "tea", "quantity": 0}, "tea"])
def test_a_bad_order_is_refused(site: Site, body: object) -> None:
    refused = post_order(Client(), body)
    assert refused.status_code == 400
    assert refused.json() == {
        "error": 'expected a JSON body {"item": "...", "quantity": 1 or more}'
    }
