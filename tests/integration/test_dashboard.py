"""The web dashboard (`taskq dashboard`) against a real Redis and a real `-E` worker, read
by headless Chromium (Debian's package, driven by Playwright) and by plain HTTP: live pages,
results and tracebacks, a dead letter replayed from its page, auth, CSRF and read-only mode.

Screenshots of the main pages are saved in tests/artifacts/dashboard/ (gitignored)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from servers import free_ports
from support import INTEGRATION, TaskqProcess, WorkerProcess, eventually, in_ci

from taskq import TaskQ, signature, states

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
# Without the background-networking flags Chromium reaches for the network, which is closed.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
USER, PASSWORD, TOKEN = "admin", "s3cret-pw", "t0ken-for-scripts"
WORKER = "dash@test"
SCREENSHOTS = Path(__file__).resolve().parents[1] / "artifacts" / "dashboard"
StartWorker = Callable[..., WorkerProcess]


@pytest.fixture
def broker_url(request: pytest.FixtureRequest) -> str:
    url: str = request.getfixturevalue("redis_server").url
    return f"{url}?prefix=dash{uuid.uuid4().hex[:8]}:"


@pytest.fixture
async def client(broker_url: str) -> AsyncIterator[TaskQ]:
    async with TaskQ("dash-client", broker=broker_url) as app:
        yield app


class DashboardProcess(TaskqProcess):
    """`taskq dashboard` on a free loopback port; `url` is its root."""

    def __init__(self, env: dict[str, str], log: Path, *options: str) -> None:
        [self.port] = free_ports(1)
        args = ["dashboard", "--port", str(self.port), "--inspect-interval", "0.5", *options]
        super().__init__(env, log, args, ready_text="Dashboard ready")
        self.url = f"http://127.0.0.1:{self.port}"


@pytest.fixture
def start_dashboard(worker_env: dict[str, str], tmp_path: Path) -> Iterator[Callable[..., Any]]:
    started: list[DashboardProcess] = []

    def start(*options: str) -> DashboardProcess:
        log = tmp_path / f"dashboard-{len(started)}.log"
        dashboard = DashboardProcess(worker_env, log, *options)
        started.append(dashboard)
        return dashboard

    yield start
    for dashboard in started:
        dashboard.stop()


@pytest.fixture
def dashboard(start_dashboard: Callable[..., DashboardProcess]) -> DashboardProcess:
    return start_dashboard("--auth", f"{USER}:{PASSWORD}", "--auth-token", TOKEN)


def require_chromium() -> None:
    """Skip without the browser; in CI (CI=true) fail: `make services` installs it."""
    if os.path.exists(CHROMIUM):
        return
    message = f"{CHROMIUM} is missing: install Debian's chromium (`make services`)"
    if in_ci():
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    require_chromium()
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def page(browser: Any, dashboard: DashboardProcess) -> AsyncIterator[Any]:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    context = await browser.new_context(
        http_credentials={"username": USER, "password": PASSWORD},
        base_url=dashboard.url,
        viewport={"width": 1100, "height": 760},
    )
    context.set_default_timeout(10_000)
    try:
        yield await context.new_page()
    finally:
        await context.close()


async def screenshot(page: Any, name: str) -> None:
    await page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


async def test_pages_follow_a_real_worker_live(
    page: Any, client: TaskQ, start_worker: StartWorker, tmp_path: Path
) -> None:
    start_worker("-E", "-n", WORKER, "-c", "4")
    await page.goto("/")
    await page.get_by_role("link", name=WORKER).first.wait_for()
    await screenshot(page, "overview")

    await page.goto("/tasks")
    await page.evaluate("window.notReloaded = true")
    script = "<script>window.injected = 1</script>"
    sent_at = time.monotonic()
    echoed = await client.send_task("itest.same", [script])
    row = page.locator(f'tr[data-task="{echoed.id}"]')
    await row.wait_for(timeout=1_000)  # live, within a second of being sent
    appeared = time.monotonic() - sent_at
    assert await page.evaluate("window.notReloaded") is True  # no reload brought it
    await row.get_by_text("SUCCESS").wait_for()
    assert script in await row.inner_text()  # the argument shown as text ...
    assert await page.evaluate("window.injected") is None  # ... and never run
    failed = await client.send_task("itest.fail", [1])
    await page.locator(f'tr[data-task="{failed.id}"]').get_by_text("FAILURE").wait_for()
    await screenshot(page, "tasks")

    await row.get_by_role("link").click()
    await page.wait_for_url(f"**/tasks/{echoed.id}")
    assert await page.locator("#task-result").inner_text() == repr(script)
    assert await page.evaluate("window.injected") is None
    await screenshot(page, "task")

    await page.goto(f"/tasks/{failed.id}")
    traceback = await page.locator("#task-traceback").inner_text()
    assert 'raise ValueError("boom")' in traceback and "ValueError: boom" in traceback
    await screenshot(page, "task-failed")

    steps = signature("itest.add", [1, 2], app=client) | signature("itest.add", [3], app=client)
    last = await steps.apply_async()
    assert await last.get(timeout=10) == 6
    assert last.parent is not None
    await page.goto(f"/tasks/{last.parent.id}")  # the chain's first step: its child drawn
    await page.locator(f'.graph a[href$="/tasks/{last.id}"]').wait_for()
    await page.goto(f"/tasks/{last.id}")  # the second: its parent drawn
    await page.locator(f'.graph a[href$="/tasks/{last.parent.id}"]').wait_for()
    await screenshot(page, "task-workflow")

    for name, path in [("workers", "/workers"), ("queues", "/queues"), ("beat", "/beat")]:
        await page.goto(path)
        await screenshot(page, name)
    await page.set_viewport_size({"width": 390, "height": 800})  # a phone
    await page.goto("/tasks")
    await screenshot(page, "tasks-phone")
    print(f"task row appeared {appeared:.2f} s after the send; screenshots in {SCREENSHOTS}")


async def test_a_dead_letter_replayed_from_its_page_runs_the_task(
    page: Any, client: TaskQ, start_worker: StartWorker, tmp_path: Path
) -> None:
    start_worker("-E", "-n", WORKER)
    marker = tmp_path / "ready"
    result = await client.send_task("itest.dead_letter_until", [str(marker)])
    broker = await client.connected_broker()

    async def dead_lettered() -> bool:
        return await broker.dead_letter_length("default") == 1

    await eventually(dead_lettered)
    await page.goto("/dead-letters")
    letter = page.locator("article.letter").filter(has_text=result.id[:8])
    await letter.get_by_text("FileNotFoundError").first.wait_for()
    await screenshot(page, "dead-letters")
    marker.write_text("ran at last")
    await letter.get_by_role("button", name="Replay", exact=True).click()
    await page.get_by_role("status").get_by_text("replayed 1 dead letter(s) of default").wait_for()
    assert await result.get(timeout=10) == "ran at last"
    assert await broker.dead_letter_length("default") == 0


async def test_credentials_are_required_and_checked(dashboard: DashboardProcess) -> None:
    async with httpx.AsyncClient(base_url=dashboard.url) as http:
        anonymous = await http.get("/api/overview")
        assert anonymous.status_code == 401
        assert anonymous.headers["www-authenticate"].startswith("Basic")
        assert (await http.get("/", auth=(USER, "wrong"))).status_code == 401
        assert (await http.get("/", auth=("other", PASSWORD))).status_code == 401
        wrong_token = {"Authorization": "Bearer not-the-token"}
        assert (await http.get("/api/overview", headers=wrong_token)).status_code == 401
        right_token = {"Authorization": f"Bearer {TOKEN}"}
        assert (await http.get("/api/overview", headers=right_token)).status_code == 200
        assert (await http.get("/tasks", auth=(USER, PASSWORD))).status_code == 200
        search = await http.get("/tasks", params={"id": "no/such"}, auth=(USER, PASSWORD))
        assert (search.status_code, search.headers["location"]) == (303, "/tasks/no%2Fsuch")
        unknown = await http.get("/tasks/no-such-id", auth=(USER, PASSWORD))
        assert unknown.status_code == 404
        assert "no task &#39;no-such-id&#39; in the dashboard&#39;s window" in unknown.text


async def test_a_post_needs_the_csrf_token_unless_it_carries_the_bearer_token(
    dashboard: DashboardProcess, client: TaskQ
) -> None:
    queue = "dash-purged"
    await client.send_task("itest.add", [1, 2], queue=queue)
    broker = await client.connected_broker()
    async with httpx.AsyncClient(base_url=dashboard.url, auth=(USER, PASSWORD)) as http:
        purge = f"/api/queues/{queue}/purge"
        forged = await http.post(purge, data={"confirm": queue})
        assert forged.status_code == 403 and "CSRF" in forged.text
        assert await broker.queue_length(queue) == 1
        token = (await http.get("/api/csrf")).json()["csrf_token"]
        unconfirmed = await http.post(
            purge, json={"confirm": "nope"}, headers={"X-CSRF-Token": token}
        )
        assert unconfirmed.status_code == 400
        assert unconfirmed.json() == {
            "error": f"type the queue's name, {queue}, to confirm the purge"
        }
        unknown = await http.post(
            purge, json={"confirm": queue, "force": "1"}, headers={"X-CSRF-Token": token}
        )
        assert unknown.json() == {"error": "queues/purge does not take force (it takes confirm)"}
        assert await broker.queue_length(queue) == 1
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(base_url=dashboard.url, headers=bearer) as http:
        done = await http.post(f"/api/queues/{queue}/purge", json={"confirm": queue})
        assert done.json() == {"ok": True, "message": f"purged 1 message(s) from {queue}"}
    assert await broker.queue_length(queue) == 0


async def test_read_only_shows_no_button_and_refuses_every_post(
    start_dashboard: Callable[..., DashboardProcess], client: TaskQ, start_worker: StartWorker
) -> None:
    start_worker("-E", "-n", WORKER)
    dashboard = start_dashboard("--auth-token", TOKEN, "--read-only")
    result = await client.send_task("itest.add", [2, 3])
    assert await result.get(timeout=10) == 5
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(base_url=dashboard.url, headers=bearer) as http:

        async def listed() -> bool:
            tasks = (await http.get("/api/tasks", params={"state": states.SUCCESS})).json()
            return result.id in [task["id"] for task in tasks["tasks"]]

        await eventually(listed)
        typo = await http.get("/api/tasks", params={"stat": "FAILURE"})
        assert typo.status_code == 400
        assert typo.json()["error"].startswith("unknown parameter 'stat' (did you mean 'state'?)")
        odd = await http.get("/queues", params={"sort": "depth"})
        assert (
            odd.status_code == 400 and "unknown parameter &#39;sort&#39;: it takes none" in odd.text
        )
        for path in ["/workers", f"/tasks/{result.id}", "/queues", "/dead-letters", "/beat"]:
            shown = await http.get(path)
            assert shown.status_code == 200 and 'method="post"' not in shown.text, path
        refused = await http.post(f"/api/tasks/{result.id}/retry")
        assert (refused.status_code, refused.text) == (403, "403: the dashboard is read-only")
        shutdown = await http.post(f"/api/workers/{WORKER}/shutdown")
        assert shutdown.status_code == 403
        workers = (await http.get("/api/workers")).json()["workers"]
        assert [(worker["name"], worker["online"]) for worker in workers] == [(WORKER, True)]


async def test_actions_steer_the_worker_tasks_and_beat(
    start_dashboard: Callable[..., DashboardProcess], client: TaskQ, start_worker: StartWorker
) -> None:
    start_worker("-E", "-n", WORKER, "-c", "4")
    earlier = await client.send_task("itest.add", [20, 22])
    assert await earlier.get(timeout=10) == 42
    await client.beat.add("nightly", task="itest.add", schedule=3600.0, args=[1, 1])
    dashboard = start_dashboard("--auth-token", TOKEN)
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(base_url=dashboard.url, headers=bearer, timeout=10) as http:

        async def post(path: str, **fields: str) -> dict[str, Any]:
            reply: dict[str, Any] = (await http.post(f"/api/{path}", json=fields)).json()
            return reply

        async def worker() -> dict[str, Any]:
            [seen] = (await http.get("/api/workers")).json()["workers"]
            return dict(seen)

        async def inspected() -> bool:  # a dashboard just started may not have heard it yet
            workers = (await http.get("/api/workers")).json()["workers"]
            return bool(workers) and workers[0]["stats"] is not None

        await eventually(inspected)
        assert (await post(f"workers/{WORKER}/pool-grow", n="2"))["ok"] is True
        assert (await post(f"workers/{WORKER}/add-consumer", queue="extra"))["ok"] is True

        async def steered() -> bool:
            seen = await worker()
            return seen["stats"]["concurrency"] == 6 and "extra" in seen["queues"]

        await eventually(steered)
        assert await post("workers/nobody@test/shutdown") == {
            "error": "worker nobody@test did not answer (is it online?)"
        }

        older = (await http.get(f"/api/tasks/{earlier.id}")).json()  # before the dashboard
        assert (older["in_window"], older["state"], older["result"]) == (False, "SUCCESS", "42")
        again = await post(f"tasks/{earlier.id}/retry")
        new_id = again["message"].rpartition(" ")[2]
        assert again["message"] == f"task {earlier.id} sent again as {new_id}"
        assert await client.AsyncResult(new_id).get(timeout=10) == 42
        later = await client.send_task("itest.add", [1, 2], countdown=60)
        assert (await post(f"tasks/{later.id}/revoke"))["ok"] is True
        store = await client.connected_store()
        assert await store.revoked([later.id]) == {later.id}  # REVOKED once it is due

        assert (await post("beat/nightly/disable"))["message"] == "beat entry nightly disabled"
        [entry] = (await http.get("/api/beat")).json()["entries"]
        assert (entry["name"], entry["enabled"]) == ("nightly", False)
        assert await client.beat.disabled() == {"nightly"}
        assert (await post("beat/nope/enable")) == {"error": "no beat entry 'nope'"}


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ([], "Error: the dashboard needs --auth user:password or --auth-token TOKEN"),
        (
            ["--no-auth", "--address", "0.0.0.0"],
            "Error: --no-auth is for loopback only, not --address 0.0.0.0",
        ),
        (["--auth", "admin"], "Error: auth must be 'user:password', both non-empty"),
    ],
)
def test_the_command_refuses_to_serve_unprotected(
    worker_env: dict[str, str], options: list[str], error: str
) -> None:
    argv = [sys.executable, "-m", "taskq", "dashboard", "-A", "itest_tasks:app", *options]
    done = subprocess.run(
        argv, env=worker_env, cwd=INTEGRATION, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1
    assert done.stderr.strip().startswith(error), done.stderr
