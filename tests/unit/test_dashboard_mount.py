"""The dashboard mounted in a host Starlette app (`create_app`), on the memory broker: its
links and forms stay under the mount path, it needs its monitor running, the broker's
password is on no page, and it will not be made without saying how requests are
authenticated."""

from __future__ import annotations

import re
import uuid

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

from taskq import TaskQ
from taskq.contrib.dashboard import create_app
from taskq.urls import masked_url

TOKEN = {"Authorization": "Bearer scripts"}


async def test_mounted_under_a_path_with_its_monitor_in_the_hosts_lifespan() -> None:
    async with TaskQ("host", broker=f"memory://ops:hunter2@{uuid.uuid4().hex}") as app:
        dashboard = create_app(app, auth_token="scripts")
        host = Starlette(routes=[Mount("/ops/dashboard", dashboard)])
        transport = httpx.ASGITransport(app=host)
        async with httpx.AsyncClient(transport=transport, base_url="http://host") as http:
            idle = await http.get("/ops/dashboard/", headers=TOKEN)
            assert idle.status_code == 503 and "dashboard.running()" in idle.text
            async with dashboard.running():
                page = await http.get("/ops/dashboard/tasks", headers=TOKEN)
                assert page.status_code == 200
                links = re.findall(r'(?:href|src|action)="([^"#?]*)', page.text)
                assert links and all(link.startswith("/ops/dashboard/") for link in links), links
                overview = (await http.get("/ops/dashboard/api/overview", headers=TOKEN)).json()
                assert overview["broker"] == masked_url(app.broker_url or "")
                for path in ["/", "/workers", "/queues", "/api/overview", "/api/workers"]:
                    shown = await http.get("/ops/dashboard" + path, headers=TOKEN)
                    assert shown.status_code == 200 and "hunter2" not in shown.text, path
                assert "ops:***@" in (await http.get("/ops/dashboard/", headers=TOKEN)).text
                assert (await http.get("/ops/dashboard/api/overview")).status_code == 401


def test_it_is_not_made_without_an_authentication_decision() -> None:
    app = TaskQ("host", broker="memory://auth")
    with pytest.raises(ValueError, match="no_auth=True"):
        create_app(app)
    with pytest.raises(ValueError, match="contradicts"):
        create_app(app, auth="a:b", no_auth=True)
    with pytest.raises(ValueError, match="'user:password'"):
        create_app(app, auth="password-only")
    with pytest.raises(ValueError, match="max_tasks"):
        create_app(app, no_auth=True, max_tasks=0)
