"""The dashboard's ASGI app: the pages, their JSON twins under /api/, the live stream, the
actions; behind `Authenticate`, with a `Monitor` running for the app's lifetime."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

import anyio
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import (
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from taskq.contrib.dashboard import actions, views
from taskq.contrib.dashboard.monitor import Monitor
from taskq.contrib.dashboard.security import CSRF_FIELD, Authenticate, Credentials, Guard

if TYPE_CHECKING:
    from taskq.app import TaskQ

HERE = Path(__file__).resolve().parent
STREAM_THROTTLE = 0.25  # seconds: a busy queue refreshes an open page at most 4 times a second
STREAM_KEEPALIVE = 15.0
# No inline script or style, nothing from elsewhere: what a task's args could smuggle in
# would not run even if it were not escaped.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}

FEEDBACK = ("notice", "error")  # what the last action said, shown once by the page it went back to
View = Callable[["Dashboard", Request], Awaitable[dict[str, Any]]]


class Dashboard(Starlette):
    """`create_app(app)`; `running()` runs its monitor (the lifespan of a standalone one; a
    host app that mounts it enters it in its own lifespan)."""

    def __init__(
        self, app: TaskQ, credentials: Credentials, guard: Guard, monitor: Monitor
    ) -> None:
        self.taskq = app
        self.guard = guard
        self.monitor = monitor
        self.monitoring = False
        self.templates = Jinja2Templates(directory=HERE / "templates")
        self.templates.env.filters.update(when=_when, seconds=_seconds)
        super().__init__(
            routes=_routes(),
            middleware=[Middleware(Authenticate, credentials=credentials)],
            lifespan=lambda _: self.running(),
        )

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        async with anyio.create_task_group() as tg:
            tg.start_soon(self.monitor.run)
            self.monitoring = True
            try:
                yield
            finally:
                self.monitoring = False
                tg.cancel_scope.cancel()


def create_app(
    app: TaskQ,
    *,
    auth: str | None = None,
    auth_token: str | None = None,
    no_auth: bool = False,
    read_only: bool = False,
    max_tasks: int = 10_000,
    inspect_interval: float = 2.0,
) -> Dashboard:
    """The dashboard of `app` as an ASGI app. Say how requests are authenticated: `auth`
    ("user:password", basic auth), `auth_token` (bearer), both, or `no_auth=True` (for
    loopback use, or behind a host app's own authentication)."""
    credentials = Credentials.parse(auth, auth_token)
    if credentials.open != no_auth:
        raise ValueError(
            "give auth='user:password' and/or auth_token=..., or no_auth=True"
            if credentials.open
            else "no_auth=True contradicts the auth or auth_token given"
        )
    return Dashboard(app, credentials, Guard(read_only), Monitor(app, max_tasks, inspect_interval))


def _routes() -> list[Route | Mount]:
    pages: list[tuple[str, str, str, View]] = [  # page, its JSON twin, template, view
        ("/", "/api/overview", "overview.html", _overview),
        ("/workers", "/api/workers", "workers.html", _workers),
        ("/tasks", "/api/tasks", "tasks.html", _tasks),
        ("/tasks/{task_id}", "/api/tasks/{task_id}", "task.html", _task),
        ("/queues", "/api/queues", "queues.html", _queues),
        ("/dead-letters", "/api/dead-letters", "dead_letters.html", _dead_letters),
        ("/beat", "/api/beat", "beat.html", _beat),
    ]
    routes: list[Route | Mount] = []
    for path, api_path, template, view in pages:
        routes += [Route(path, _page(template, view)), Route(api_path, _api(view))]
    routes += [
        Route("/api/csrf", _csrf),
        Route("/api/stream", _stream),
        Route("/api/{kind}/{target}/{action}", _action, methods=["POST"]),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    return routes


def _dashboard(request: Request) -> Dashboard:
    app = request.app
    assert isinstance(app, Dashboard)
    return app


def _not_monitoring() -> Response:
    return PlainTextResponse(
        "503: the dashboard's monitor is not running: enter `dashboard.running()` in the"
        " lifespan of the app that mounts it",
        503,
    )


def _page(template: str, view: View) -> Callable[[Request], Awaitable[Response]]:
    async def page(request: Request) -> Response:
        dashboard = _dashboard(request)
        if not dashboard.monitoring:
            return _not_monitoring()
        base = _base(request)
        wanted = request.query_params.get("id", "").strip()
        if template == "tasks.html" and wanted:  # the search by id opens the task's page
            return RedirectResponse(f"{base}/tasks/{quote(wanted, safe='')}", 303)
        context: dict[str, Any] = {
            "base": base,
            "page": template,
            "csrf_field": CSRF_FIELD,
            "csrf_token": dashboard.guard.csrf_token,
            "read_only": dashboard.guard.read_only,
            "notice": request.query_params.get("notice"),
            "error": request.query_params.get("error"),
            "here": _here(request),
        }
        status = 200
        try:
            context["data"] = await view(dashboard, request)
        except views.NotFound as exc:
            context["data"], context["error"], status = None, str(exc), 404
        except ValueError as exc:
            context["data"], context["error"], status = None, str(exc), 400
        return dashboard.templates.TemplateResponse(
            request, template, context, status, headers=SECURITY_HEADERS
        )

    return page


def _api(view: View) -> Callable[[Request], Awaitable[Response]]:
    async def api(request: Request) -> Response:
        dashboard = _dashboard(request)
        if not dashboard.monitoring:
            return _not_monitoring()
        try:
            return JSONResponse(await view(dashboard, request))
        except views.NotFound as exc:
            return JSONResponse({"error": str(exc)}, 404)
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, 400)

    return api


def _query(request: Request, *accepted: str) -> dict[str, str]:
    """The query parameters, but for the last action's feedback; an unknown one is an error."""
    params = {k: v for k, v in request.query_params.items() if k not in FEEDBACK}
    views.check_parameters(params, accepted)
    return params


async def _overview(dashboard: Dashboard, request: Request) -> dict[str, Any]:
    _query(request)
    return await views.overview(dashboard.taskq, dashboard.monitor)


async def _workers(dashboard: Dashboard, request: Request) -> dict[str, Any]:
    _query(request)
    return views.workers(dashboard.monitor)


async def _tasks(dashboard: Dashboard, request: Request) -> dict[str, Any]:
    return views.tasks(dashboard.monitor, _query(request, *views.TASK_PARAMETERS))


async def _task(dashboard: Dashboard, request: Request) -> dict[str, Any]:
    _query(request)
    return await views.task(dashboard.taskq, dashboard.monitor, request.path_params["task_id"])


async def _queues(dashboard: Dashboard, request: Request) -> dict[str, Any]:
    _query(request)
    return await views.queues(dashboard.taskq, dashboard.monitor)


async def _dead_letters(dashboard: Dashboard, request: Request) -> dict[str, Any]:
    queue = _query(request, "queue").get("queue", "").strip() or None
    return await views.dead_letters(dashboard.taskq, dashboard.monitor, queue)


async def _beat(dashboard: Dashboard, request: Request) -> dict[str, Any]:
    _query(request)
    return await views.beat(dashboard.taskq)


async def _csrf(request: Request) -> Response:
    return JSONResponse({"csrf_token": _dashboard(request).guard.csrf_token})


async def _stream(request: Request) -> Response:
    """Server-sent events: `change` (the monitor's change count) whenever what the pages
    show changed, at most every `STREAM_THROTTLE`; a page refetches itself on it."""
    monitor = _dashboard(request).monitor

    async def changes() -> AsyncIterator[str]:
        seen = monitor.changes
        yield f"retry: 2000\nevent: change\ndata: {seen}\n\n"
        while True:
            with anyio.move_on_after(STREAM_KEEPALIVE) as waiting:
                seen = await monitor.wait_change(seen)
            if waiting.cancelled_caught:
                yield ": keepalive\n\n"
                continue
            yield f"event: change\ndata: {seen}\n\n"
            await anyio.sleep(STREAM_THROTTLE)

    return StreamingResponse(
        changes(), media_type="text/event-stream", headers={"Cache-Control": "no-store"}
    )


async def _action(request: Request) -> Response:
    """POST /api/<kind>/<target>/<action>: from a page's form (then back to the page, with
    what happened), or from a script (JSON)."""
    dashboard = _dashboard(request)
    from_form = request.headers.get("content-type", "").startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    )
    fields: dict[str, str] = {}
    if from_form:
        fields = {key: str(value) for key, value in (await request.form()).items()}
    elif request.headers.get("content-type", "").startswith("application/json"):
        try:
            body = await request.json()
        except ValueError:
            return JSONResponse({"error": "the body is not valid JSON"}, 400)
        if not isinstance(body, dict):
            return JSONResponse({"error": "the body must be a JSON object"}, 400)
        fields = {key: str(value) for key, value in body.items()}
    refusal = dashboard.guard.refusal(request, fields.pop(CSRF_FIELD, None))
    if refusal is not None:
        return refusal
    back = _back(request, fields.pop("next", ""))
    params = request.path_params
    try:
        action = actions.find(params["kind"], params["action"], fields)
        done = await action(dashboard.taskq, params["target"], fields)
    except (views.NotFound, ValueError) as exc:
        if from_form:
            return RedirectResponse(f"{back}{_join(back)}{urlencode({'error': str(exc)})}", 303)
        return JSONResponse({"error": str(exc)}, 404 if isinstance(exc, views.NotFound) else 400)
    if from_form:
        return RedirectResponse(f"{back}{_join(back)}{urlencode({'notice': done})}", 303)
    return JSONResponse({"ok": True, "message": done})


def _here(request: Request) -> str:
    """This page's path and query, without the last action's notice or error: where its
    forms come back to."""
    kept = [(k, v) for k, v in request.query_params.multi_items() if k not in FEEDBACK]
    return request.url.path + (f"?{urlencode(kept)}" if kept else "")


def _base(request: Request) -> str:
    """The path the dashboard is mounted at ('' when it is the whole server)."""
    base: str = request.scope.get("root_path", "")
    return base


def _back(request: Request, wanted: str) -> str:
    """Where a form goes back to: its `next` path within the dashboard, else the overview."""
    base = _base(request)
    if wanted.startswith(base + "/") and not wanted.startswith("//"):
        return wanted
    return base + "/"


def _join(url: str) -> str:
    return "&" if "?" in url else "?"


def _when(epoch: float | None) -> str:
    if epoch is None:
        return ""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _seconds(value: float | None) -> str:
    if value is None:
        return ""
    if value < 0.001:
        return f"{value * 1_000_000:.0f} µs"
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"
