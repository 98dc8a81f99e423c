"""The `taskq` command: worker, call, result, purge, status, inspect, control, dlq,
dashboard."""

from __future__ import annotations

import functools
import importlib
import importlib.util
import logging
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import anyio
import orjson
import typer

from taskq import dlq, logs, typed_json
from taskq.app import TaskQ
from taskq.control import DEFAULT_TIMEOUT, INSPECT_COMMANDS, CommandOptions, Replies
from taskq.daemon import Daemon, reopen_logfile
from taskq.errors import (
    AppLoadError,
    CommandError,
    ConfigurationError,
    LoginRefusedError,
    StartupError,
    TaskError,
    TaskQError,
)
from taskq.message import peek_id
from taskq.options import parse_rate
from taskq.routing import known_queues
from taskq.startup import connect_at_startup
from taskq.stores.base import TaskMeta
from taskq.suggest import did_you_mean
from taskq.urls import masked_url

if TYPE_CHECKING:
    from taskq.worker.worker import Worker

cli = typer.Typer(
    name="taskq",
    help="taskq: an asyncio-native distributed task queue.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

T = TypeVar("T")

AppOption = Annotated[
    str,
    typer.Option("--app", "-A", help="The app: 'module:attribute' or 'module' (attribute 'app')."),
]
LogLevelOption = Annotated[
    str, typer.Option("--loglevel", "-l", help="debug, info, warning, error.")
]
LoopOption = Annotated[
    str,
    typer.Option("--loop", help="Event loop: auto (uvloop when installed), asyncio or uvloop."),
]
QueuesOption = Annotated[
    str | None,
    typer.Option(
        "--queues",
        "-Q",
        help="Comma-separated queue names (default: task_queues, else task_default_queue).",
    ),
]

ForceOption = Annotated[bool, typer.Option("--force", "-f", help="Do not ask for confirmation.")]

# The daemon options of `worker` and `beat`, taken by run_command before the event loop starts.
DetachOption = Annotated[
    bool, typer.Option("--detach", help="Run in the background (with --logfile).")
]
PidfileOption = Annotated[
    str | None,
    typer.Option(help="Write the pid here; refuse to start while a live process holds it."),
]
LogfileOption = Annotated[
    str | None, typer.Option(help="Log to this file, not stderr (reopened on SIGHUP).")
]
UidOption = Annotated[str | None, typer.Option(help="Run as this user (started as root).")]
GidOption = Annotated[str | None, typer.Option(help="Run as this group (started as root).")]


# Client libraries whose errors (a server down, refused credentials) are one line, too.
BROKER_CLIENTS = frozenset({"redis", "aio_pika", "aiormq", "pamqp"})


EVENT_LOOPS = ("auto", "asyncio", "uvloop")


def _print_version(wanted: bool) -> None:
    if wanted:
        from importlib.metadata import version  # zipfile, csv, email: 1.7 MB of RSS

        typer.echo(f"taskq {version('taskq')}")
        raise typer.Exit()


@cli.callback()
def _global_options(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Options that come before the command: --version."""


def event_loop_options(loop: str) -> dict[str, Any]:
    """anyio's backend options for `--loop`: `auto` takes uvloop
    when it is installed (`pip install taskq[uvloop]`)."""
    if loop not in EVENT_LOOPS:
        raise CommandError(f"--loop must be one of {', '.join(EVENT_LOOPS)}, not {loop!r}")
    installed = importlib.util.find_spec("uvloop") is not None
    if loop == "uvloop" and not installed:
        raise CommandError("uvloop is not installed: pip install 'taskq[uvloop]'")
    return {"use_uvloop": loop != "asyncio" and installed}


def load_app(spec: str) -> TaskQ:
    """Import `module:attribute` (or `module`, attribute `app`) from the working directory."""
    module_name, _, attribute = spec.partition(":")
    attribute = attribute or "app"
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise AppLoadError(f"cannot import {module_name!r}: {_describe(exc)}") from None
    if not hasattr(module, attribute):
        apps = [name for name, value in vars(module).items() if isinstance(value, TaskQ)]
        found = f"; its TaskQ apps: {', '.join(apps)}" if apps else ", nor any TaskQ app"
        raise AppLoadError(f"module {module_name!r} has no attribute {attribute!r}{found}")
    app = getattr(module, attribute)
    if not isinstance(app, TaskQ):
        kind = type(app).__name__
        raise AppLoadError(f"{module_name}:{attribute} is a {kind}, not a TaskQ app")
    return app


def _describe(exc: Exception) -> str:
    """`exc` on one line, with the file and line in the user's code where it was raised."""
    if isinstance(exc, SyntaxError):
        message, where = exc.msg, _place(exc.filename, exc.lineno)
    else:
        message, where = str(exc), _raised_in_user_code(exc)
    text = " ".join(f"{type(exc).__name__}: {message}".split())
    return f"{text} (at {where})" if where else text


def _raised_in_user_code(exc: BaseException) -> str | None:
    """The innermost frame of `exc`'s traceback outside the standard library, installed
    packages, importlib and taskq: where in the user's code it happened."""
    import sysconfig  # only for an app that failed to load

    others = {sysconfig.get_path(name) for name in ("stdlib", "platstdlib", "purelib", "platlib")}
    others.add(os.path.dirname(os.path.abspath(__file__)))
    user_frames = [
        frame
        for frame in traceback.extract_tb(exc.__traceback__)
        if not frame.filename.startswith("<")
        and not any(os.path.abspath(frame.filename).startswith(d + os.sep) for d in others)
    ]
    return _place(user_frames[-1].filename, user_frames[-1].lineno) if user_frames else None


def _place(filename: str | None, line: int | None) -> str | None:
    if filename is None:
        return None
    path = os.path.relpath(filename) if filename.startswith(os.getcwd() + os.sep) else filename
    return f"{path}:{line}" if line is not None else path


def run_command(fn: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an async command; taskq's errors end it with one line and a non-zero exit status:
    1, or 2 for an app that does not load and a login or vhost the broker refuses (running it
    again will not mend either)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        try:
            options = event_loop_options(kwargs.get("loop", "auto"))
            with Daemon.from_options(kwargs).running():
                anyio.run(functools.partial(fn, *args, **kwargs), backend_options=options)
        except BrokenPipeError:
            # The reader left (`taskq dlq list | head -1`): Click, around every command, sends
            # the rest of the output nowhere and exits 1 quietly, as the Python docs advise.
            raise
        except CommandError as exc:
            print_error(str(exc))
            raise typer.Exit(exc.exit_code) from None
        except LoginRefusedError as exc:  # exit 2: a supervisor need not try again
            print_error(str(exc))
            raise typer.Exit(2) from None
        except (TaskQError, ValueError, OSError) as exc:
            print_error(str(exc))
            raise typer.Exit(1) from None
        except Exception as exc:
            if type(exc).__module__.partition(".")[0] not in BROKER_CLIENTS:
                raise
            print_error(f"{type(exc).__name__}: {exc}")  # e.g. Redis is down
            raise typer.Exit(1) from None

    return wrapper


def print_error(text: str) -> None:
    """The one line a failed command prints, passwords masked."""
    typer.echo(f"Error: {masked_url(text)}", err=True)


def split_queues(app: TaskQ, queues: str | None) -> list[str]:
    names = [name.strip() for name in (queues or "").split(",") if name.strip()]
    return names or app.conf.default_queues()


@cli.command()
@run_command
async def worker(
    context: typer.Context,
    app: AppOption,
    queues: QueuesOption = None,
    concurrency: Annotated[
        int | None, typer.Option("--concurrency", "-c", min=1, help="Tasks run at once.")
    ] = None,
    threads: Annotated[
        int | None, typer.Option(min=1, help="Threads for plain (sync) tasks.")
    ] = None,
    prefetch_multiplier: Annotated[
        int | None, typer.Option(min=1, help="Reserved = concurrency x this.")
    ] = None,
    shutdown_timeout: Annotated[
        float | None, typer.Option(help="Seconds a warm shutdown waits.")
    ] = None,
    hostname: Annotated[
        str | None, typer.Option("--hostname", "-n", help="This worker's name.")
    ] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            min=1, max=65535, help="Serve /metrics (Prometheus) on this port: taskq[prometheus]."
        ),
    ] = None,
    loglevel: LogLevelOption = "info",
    log_format: Annotated[
        str | None,
        typer.Option(help="text, or json: one object per line (default: worker_log_format)."),
    ] = None,
    beat: Annotated[
        bool, typer.Option("--beat", "-B", help="Also run beat in this process.")
    ] = False,
    task_events: Annotated[
        bool,
        typer.Option(
            "--task-events", "-E", help="Send task events (worker_send_task_events): taskq events."
        ),
    ] = False,
    processes: Annotated[
        int | None,
        typer.Option(
            min=0, help="Worker processes, kept by a supervisor (0: one per core; default 1)."
        ),
    ] = None,
    supervised: Annotated[bool, typer.Option(hidden=True)] = False,  # a supervisor's child
    autoscale: Annotated[
        str | None,
        typer.Option(help="MAX,MIN: task slots (and pool processes) move between them."),
    ] = None,
    pool: Annotated[
        str | None,
        typer.Option(help="Where plain (sync) tasks run: thread or process (worker_pool)."),
    ] = None,
    pool_processes: Annotated[
        int | None,
        typer.Option(min=1, help="Processes of the process pool (default: one per core)."),
    ] = None,
    max_tasks_per_child: Annotated[
        int | None, typer.Option(min=1, help="Recycle a pool (or worker) process after N tasks.")
    ] = None,
    max_memory_per_child: Annotated[
        int | None,
        typer.Option(min=1, help="Recycle a pool (or worker) process past this resident KB."),
    ] = None,
    detach: DetachOption = False,  # these five are taken by run_command
    pidfile: PidfileOption = None,
    logfile: LogfileOption = None,
    uid: UidOption = None,
    gid: GidOption = None,
    loop: LoopOption = "auto",  # taken by run_command, which starts the event loop
) -> None:
    """Run a worker until SIGTERM/SIGINT (warm shutdown; a second signal is cold)."""
    # Imported here, each where it is needed: the other commands load no worker code, and a
    # worker no supervisor (the HTTP and URL clients of its merged /metrics) unless it has one.
    from taskq.worker.collector import tune_collector
    from taskq.worker.worker import Worker, default_hostname

    configure_logging(loglevel)
    taskq_app = load_app(app)
    if log_format is not None:
        if log_format not in ("text", "json"):
            raise CommandError(f"--log-format must be text or json, not {log_format!r}")
        taskq_app.conf.worker_log_format = log_format
    scaling = None
    if autoscale:  # checked before any start
        from taskq.worker.autoscale import parse_autoscale

        scaling = parse_autoscale(autoscale)
    count = taskq_app.conf.worker_processes if processes is None else processes
    if count != 1 and not supervised:
        from taskq.worker.supervisor import Supervisor

        taskq_app.conf.validate()
        configure_logging(loglevel, taskq_app.conf.worker_log_format, hostname)
        supervisor = Supervisor(
            child_arguments(context),
            count or os.cpu_count() or 1,
            hostname or default_hostname(),
            metrics_port or taskq_app.conf.worker_metrics_port,
        )
        raise typer.Exit(await supervisor.run())
    if supervised:
        from taskq.worker.supervisor import follow_supervisor

        follow_supervisor()
    try:
        runner = Worker(
            taskq_app,
            queues=split_queues(taskq_app, queues),
            concurrency=concurrency,
            threads=threads,
            prefetch_multiplier=prefetch_multiplier,
            shutdown_timeout=shutdown_timeout,
            hostname=hostname,
            metrics_port=metrics_port,
            send_events=True if task_events else None,
            pool=pool,
            pool_processes=pool_processes,
            max_tasks_per_child=max_tasks_per_child,
            max_memory_per_child=max_memory_per_child,
            app_spec=app,
            supervised=supervised,
            autoscale=scaling,
        )
    except ConfigurationError as exc:
        if supervised:  # its siblings would fail the same way: the supervisor stops
            raise StartupError(str(exc)) from None
        raise
    configure_logging(loglevel, taskq_app.conf.worker_log_format, runner.hostname)
    tune_collector(taskq_app.conf.worker_gc_threshold)
    await connect_at_startup(taskq_app)
    async with taskq_app, anyio.create_task_group() as tg:
        await tg.start(_shutdown_on_signals, runner, supervised)
        if beat:
            from taskq.beat.scheduler import Beat  # a worker without --beat loads no beat code

            tg.start_soon(Beat(taskq_app).run)
        await runner.run()
        tg.cancel_scope.cancel()
    if runner.recycling is not None and runner.recycling.recycled:  # only a supervised one
        from taskq.worker.supervisor import RECYCLED

        raise typer.Exit(RECYCLED)


# What the supervisor decides for itself; its children get every other option it was given.
SUPERVISOR_OPTIONS = frozenset(
    {"processes", "hostname", "supervised", "metrics_port", "detach", "pidfile", "uid", "gid"}
)


def child_arguments(context: typer.Context) -> list[str]:
    """The options of this command line that a supervised worker process is given."""
    arguments: list[str] = []
    for param in context.command.params:
        value = context.params.get(param.name or "")
        if (
            param.param_type_name != "option"
            or param.name in SUPERVISOR_OPTIONS
            or value is None
            or value == param.default
        ):
            continue
        if getattr(param, "is_flag", False):
            arguments.append((param.opts if value else param.secondary_opts)[0])
        else:
            arguments += [param.opts[0], str(value)]
    return arguments


async def _shutdown_on_signals(
    runner: Worker,
    supervised: bool,
    *,
    task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        task_status.started()  # handlers are in place before the worker says it is ready
        first = True
        async for signum in signals:
            if signum == signal.SIGHUP:
                reopen_logfile()  # after logrotate; a HUP never stops a worker
                if runner.processes is not None:
                    runner.processes.signal(signal.SIGHUP)
                continue
            if signum == signal.SIGINT and supervised:
                continue  # a terminal's Ctrl-C: the supervisor passes it on as SIGTERM
            if first:
                runner.stop()
                first = False
            else:
                runner.terminate()


@cli.command("beat")
@run_command
async def beat_command(
    app: AppOption,
    list_entries: Annotated[
        bool, typer.Option("--list", help="Print the entries and exit.")
    ] = False,
    loglevel: LogLevelOption = "info",
    detach: DetachOption = False,  # these five are taken by run_command
    pidfile: PidfileOption = None,
    logfile: LogfileOption = None,
    uid: UidOption = None,
    gid: GidOption = None,
) -> None:
    """Run the periodic-task scheduler (any number may run: one leads, the others stand by)."""
    from taskq.beat.scheduler import Beat

    configure_logging(loglevel)
    taskq_app = load_app(app)
    if list_entries:
        async with taskq_app:
            await _print_entries(taskq_app)
        return
    await connect_at_startup(taskq_app)
    async with taskq_app:
        scheduler = Beat(taskq_app)
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            async with anyio.create_task_group() as tg:
                tg.start_soon(scheduler.run)
                async for signum in signals:
                    if signum == signal.SIGHUP:
                        reopen_logfile()
                        continue
                    tg.cancel_scope.cancel()
                    break


async def _print_entries(app: TaskQ) -> None:
    from taskq.beat.scheduler import Beat, read_state

    scheduler = Beat(app)
    store = await app.connected_store()
    now = datetime.now(UTC)
    disabled = await app.beat.disabled()
    for entry in await app.beat.entries():
        state = await read_state(store, entry.name)
        upcoming = scheduler.upcoming(entry, state, now)
        runs = state.total_runs if state else 0
        when = (
            "disabled"
            if entry.name in disabled
            else "next " + (upcoming.isoformat() if upcoming else "never")
        )
        typer.echo(f"{entry.name}: {entry.task} {entry.schedule!r} {when} runs {runs}")


def configure_logging(level: str, log_format: str = "text", worker: str | None = None) -> None:
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise CommandError(f"unknown log level {level!r}")
    logs.configure_logging(numeric, log_format, worker)


@cli.command()
@run_command
async def call(
    name: Annotated[str, typer.Argument(help="The registered task name.")],
    app: AppOption,
    args: Annotated[str, typer.Option(help="Positional arguments as a JSON list.")] = "[]",
    kwargs: Annotated[str, typer.Option(help="Keyword arguments as a JSON object.")] = "{}",
    queue: Annotated[str | None, typer.Option("--queue", "-Q")] = None,
    countdown: Annotated[float | None, typer.Option()] = None,
    wait: Annotated[bool, typer.Option(help="Wait for the result and print it.")] = False,
    timeout: Annotated[float | None, typer.Option(help="Seconds --wait waits.")] = None,
    force: Annotated[
        bool, typer.Option(help="Send NAME even if the app does not know it (workers may).")
    ] = False,
) -> None:
    """Publish task NAME by name and print its id (or, with --wait, its result)."""
    call_args, call_kwargs = _json_arg("--args", args, list), _json_arg("--kwargs", kwargs, dict)
    taskq_app = load_app(app)
    if name not in taskq_app.tasks and not force:
        hint = did_you_mean(name, taskq_app.tasks)
        raise CommandError(f"unknown task {name!r}{hint}; --force sends it anyway")
    async with taskq_app:
        result = await taskq_app.send_task(
            name, call_args, call_kwargs, queue=queue, countdown=countdown
        )
        if not wait:
            typer.echo(result.id)
            return
        try:
            value = await result.get(timeout=timeout)
        except TaskError as exc:
            raise CommandError(f"task {result.id} failed: {exc}") from None
        typer.echo(typed_json.dumps(value).decode())


def _json_arg(option: str, text: str, kind: type[T]) -> T:
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise CommandError(f"{option} is not valid JSON: {exc}") from None
    if not isinstance(value, kind):
        raise CommandError(f"{option} must be a JSON {'list' if kind is list else 'object'}")
    return value


@cli.command()
@run_command
async def result(
    task_id: Annotated[str, typer.Argument(help="The task id.")],
    app: AppOption,
    wait: Annotated[bool, typer.Option(help="Wait until the task is ready.")] = False,
    timeout: Annotated[float | None, typer.Option(help="Seconds --wait waits.")] = None,
) -> None:
    """Print a task's state and result as JSON."""
    taskq_app = load_app(app)
    async with taskq_app:
        store = await taskq_app.connected_store()
        meta = (
            await store.wait(task_id, timeout)
            if wait
            else await store.get(task_id) or TaskMeta(task_id)
        )
        typer.echo(typed_json.dumps(_public_meta(meta)).decode())


def _public_meta(meta: TaskMeta) -> dict[str, Any]:
    shown: dict[str, Any] = {"id": meta.task_id, "status": meta.status, "task": meta.task}
    if meta.exc_type is not None:
        shown.update(exc_type=meta.exc_type, exc_message=meta.exc_message, traceback=meta.traceback)
    else:
        shown["result"] = meta.result
    return shown


@cli.command()
@run_command
async def purge(app: AppOption, queues: QueuesOption = None, force: ForceOption = False) -> None:
    """Delete the messages waiting in the queues (after asking, unless -f)."""
    taskq_app = load_app(app)
    async with taskq_app:
        broker = await taskq_app.connected_broker()
        names = split_queues(taskq_app, queues)
        if not force:
            total = sum([await broker.queue_length(queue) for queue in names])
            confirm_purge(f"up to {total} message(s) from queue(s) {', '.join(names)}")
        for queue in names:
            count = await broker.purge(queue)
            typer.echo(f"Purged {count} message(s) from {queue}")


def confirm_purge(what: str) -> None:
    """Ask before deleting `what`; with no terminal to ask on, refuse: a purge is never
    silent unless forced."""
    if not sys.stdin.isatty():
        raise CommandError(
            f"refusing to purge {what} unconfirmed: stdin is not a terminal (pass -f/--force)"
        )
    if not typer.confirm(f"Purge {what}?", default=False):
        raise CommandError("nothing purged")


@cli.command()
@run_command
async def status(
    app: AppOption,
    queues: QueuesOption = None,
    timeout: Annotated[
        float, typer.Option(min=0.001, help="Seconds to wait for the workers' answers.")
    ] = DEFAULT_TIMEOUT,
) -> None:
    """Print the workers (name, state, queues, active tasks, last heartbeat), then each
    queue's depth, delayed messages and dead letters."""
    taskq_app = load_app(app)
    async with taskq_app:
        print_workers(await taskq_app.control.ping(timeout=timeout), timeout)
        typer.echo()
        broker = await taskq_app.connected_broker()
        names = split_queues(taskq_app, queues) if queues else known_queues(taskq_app)
        rows = [
            [
                name,
                await broker.queue_length(name),
                await broker.scheduled_length(name),
                await broker.dead_letter_length(name),
            ]
            for name in names
        ]
        print_table(["queue", "messages", "delayed", "dead letters"], rows)


def print_workers(replies: Replies, timeout: float) -> None:
    """The workers known by heartbeat, and any that answered before its first one."""
    now = time.time()
    rows: list[list[object]] = []
    for name in sorted(replies.workers.keys() | replies.answered):
        presence = replies.workers.get(name)
        if presence is None:
            rows.append([name, "online", "", "", "none yet"])
            continue
        state = "no answer" if name in replies.missing else "online"
        rows.append(
            [
                name,
                state if presence.online else "offline",
                ",".join(presence.queues),
                presence.active,
                f"{now - presence.last_heartbeat:.1f} s ago",
            ]
        )
    if not rows:
        typer.echo(f"No worker answered within {timeout} s.")
        return
    print_table(["worker", "state", "queues", "active", "last heartbeat"], rows)


def print_table(header: list[str], rows: list[list[object]]) -> None:
    """Text left-aligned, numbers right-aligned, columns as wide as their widest cell."""
    cells = [header, *[[str(cell) for cell in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    numeric = [
        bool(rows) and all(isinstance(row[i], int) for row in rows) for i in range(len(header))
    ]
    for row in cells:
        aligned = [
            cell.rjust(width) if right else cell.ljust(width)
            for cell, width, right in zip(row, widths, numeric, strict=True)
        ]
        typer.echo("  ".join(aligned).rstrip())


DestinationOption = Annotated[
    str | None,
    typer.Option(
        "--destination", "-d", help="Comma-separated worker names (default: every worker)."
    ),
]
TimeoutOption = Annotated[
    float, typer.Option(min=0.001, help="Seconds to wait for the workers' replies.")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the replies as one JSON object.")]


@cli.command("events")
@run_command
async def events(
    app: AppOption,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON object per line, as sent.")
    ] = False,
    task_id: Annotated[
        str | None, typer.Option("--task", help="Only the events of this task id.")
    ] = None,
    since: Annotated[
        float | None,
        typer.Option(
            min=0, help="Start this many seconds back (Redis, RabbitMQ: within event_retention)."
        ),
    ] = None,
    loglevel: LogLevelOption = "warning",
) -> None:
    """Print the task events as they come (workers run with -E; task-sent with
    task_send_sent_event) until interrupted."""
    configure_logging(loglevel)
    taskq_app = load_app(app)
    listening = anyio.Event()

    async def say_listening() -> None:
        await listening.wait()
        typer.echo("Listening for task events (Ctrl-C to stop)", err=True)

    async with taskq_app, anyio.create_task_group() as tg:
        tg.start_soon(say_listening)
        async for event in taskq_app.events.receive(task_id=task_id, ready=listening, since=since):
            typer.echo(orjson.dumps(event).decode() if as_json else format_event(event))


@cli.command("dashboard")
@run_command
async def dashboard(
    app: AppOption,
    port: Annotated[int, typer.Option(min=0, max=65535, help="The port to listen on.")] = 5555,
    address: Annotated[str, typer.Option(help="The address to listen on.")] = "127.0.0.1",
    auth: Annotated[
        str | None, typer.Option(help="Basic auth: 'user:password'.", metavar="USER:PASSWORD")
    ] = None,
    auth_token: Annotated[str | None, typer.Option(help="A bearer token to accept.")] = None,
    no_auth: Annotated[bool, typer.Option(help="No authentication (loopback only).")] = False,
    read_only: Annotated[
        bool, typer.Option(help="No buttons; refuse every state-changing request.")
    ] = False,
    max_tasks: Annotated[int, typer.Option(min=1, help="Recent tasks kept in memory.")] = 10_000,
    inspect_interval: Annotated[
        float, typer.Option(min=0.1, help="Seconds between inspections of the workers.")
    ] = 2.0,
    loglevel: LogLevelOption = "info",
) -> None:
    """Serve the web dashboard (pip install 'taskq[dashboard]'; workers run with -E)."""
    configure_logging(loglevel)
    try:
        from taskq.contrib.dashboard.serve import serve
    except ImportError as exc:
        raise CommandError(f"{exc}: pip install 'taskq[dashboard]'") from None
    await serve(
        load_app(app),
        address=address,
        port=port,
        auth=auth,
        auth_token=auth_token,
        no_auth=no_auth,
        read_only=read_only,
        max_tasks=max_tasks,
        inspect_interval=inspect_interval,
    )


@cli.command()
@run_command
async def exporter(
    app: AppOption,
    port: Annotated[
        int, typer.Option(min=0, max=65535, help="The port of /metrics (every interface).")
    ] = 9808,
    queues: Annotated[
        str | None,
        typer.Option(
            "--queues", "-Q", help="Comma-separated queues to sample (default: the app's)."
        ),
    ] = None,
    loglevel: LogLevelOption = "info",
) -> None:
    """Serve the whole cluster's metrics on /metrics, under the worker's names: task counts,
    runtimes and queue waits from the task events (workers run with -E), the queues' depths,
    and the workers online and their active tasks from their heartbeats."""
    from taskq.exporter import Exporter  # http.server: only for this command

    configure_logging(loglevel)
    taskq_app = load_app(app)
    names = split_queues(taskq_app, queues) if queues else known_queues(taskq_app)
    cluster = Exporter(taskq_app, port, names)  # the port bound, or a one-line error
    async with taskq_app:
        await cluster.run()


def format_event(event: dict[str, Any]) -> str:
    """`time type name[uuid] key=value...`, the fields every event has left out."""
    when = datetime.fromtimestamp(float(event.get("timestamp") or 0), UTC)
    common = {"type", "uuid", "hostname", "timestamp", "pid", "clock", "name", "traceback"}
    rest = " ".join(
        f"{key}={value}" for key, value in event.items() if key not in common and value is not None
    )
    name = f"{event['name']}" if event.get("name") else ""
    line = f"{when:%H:%M:%S.%f}"[:-3] + f" {event.get('hostname')} {event.get('type')}"
    return f"{line} {name}[{event.get('uuid')}] {rest}".rstrip()


@cli.command("inspect")
@run_command
async def inspect_command(
    command: Annotated[str, typer.Argument(help=f"One of: {', '.join(INSPECT_COMMANDS)}.")],
    app: AppOption,
    destination: DestinationOption = None,
    timeout: TimeoutOption = DEFAULT_TIMEOUT,
    as_json: JsonOption = False,
) -> None:
    """Ask the workers (Celery's `inspect`); exits 1 unless every known (or named) worker
    answered: `taskq inspect ping -d NAME` is a liveness probe."""
    taskq_app = load_app(app)
    async with taskq_app:
        inspector = taskq_app.control.inspect(split_names(destination), timeout)
        print_replies(await inspector.ask(command), timeout, as_json)


CONTROL_USAGE = {
    "rate_limit": "TASK RATE (e.g. 10/s; none: no limit)",
    "time_limit": "TASK SOFT HARD (seconds; none: no limit)",
    "shutdown": "",
    "pool_grow": "[N]",
    "pool_shrink": "[N]",
    "add_consumer": "QUEUE",
    "cancel_consumer": "QUEUE",
    "revoke": "ID... [--terminate]",
}


@cli.command("control")
@run_command
async def control_command(
    command: Annotated[
        str,
        typer.Argument(help=f"One of: {', '.join(CONTROL_USAGE)}, or a command of the app's."),
    ],
    app: AppOption,
    args: Annotated[list[str] | None, typer.Argument(help="The command's arguments.")] = None,
    terminate: Annotated[
        bool, typer.Option("--terminate", help="revoke: also cancel the tasks where they run.")
    ] = False,
    arguments: Annotated[
        str | None, typer.Option(help="A command of the app's: its arguments, a JSON object.")
    ] = None,
    destination: DestinationOption = None,
    timeout: TimeoutOption = DEFAULT_TIMEOUT,
    as_json: JsonOption = False,
) -> None:
    """Tell the workers (Celery's `control`) and print who applied it; exits 1 unless every
    known (or named) worker did."""
    values = args or []
    if (terminate and command != "revoke") or (arguments is not None and command in CONTROL_USAGE):
        raise CommandError(f"{command}: takes {CONTROL_USAGE[command] or 'no arguments'}")
    taskq_app = load_app(app)
    options: CommandOptions = {
        "destination": split_names(destination),
        "timeout": timeout,
        "reply": True,
    }
    control = taskq_app.control
    async with taskq_app:
        if command == "revoke":
            if not values:
                raise CommandError(f"revoke: takes {CONTROL_USAGE['revoke']}")
            replies = await control.revoke(values, terminate, **options)
        elif command in CONTROL_USAGE:
            replies = await control.broadcast(
                command, _control_arguments(command, values), **options
            )
        elif values:
            raise CommandError(f"{command}: give its arguments as --arguments '{{...}}'")
        else:
            replies = await control.broadcast(
                command, _json_arg("--arguments", arguments or "{}", dict), **options
            )
        assert replies is not None
        print_replies(replies, timeout, as_json)


def _control_arguments(command: str, values: list[str]) -> dict[str, Any]:
    """The arguments of a built-in control command, from the command line."""
    usage = CommandError(f"{command}: takes {CONTROL_USAGE[command] or 'no arguments'}")
    if command == "rate_limit":
        if len(values) != 2:
            raise usage
        rate = None if values[1].lower() == "none" else values[1]
        if rate is not None:
            parse_rate(rate)
        return {"task_name": values[0], "rate_limit": rate}
    if command == "time_limit":
        if len(values) != 3:
            raise usage
        soft, hard = (_seconds_or_none(command, value) for value in values[1:])
        return {"task_name": values[0], "soft": soft, "hard": hard}
    if command in ("pool_grow", "pool_shrink"):
        if len(values) > 1 or not all(value.isdigit() for value in values):
            raise usage
        return {"n": int(values[0]) if values else 1}
    if command in ("add_consumer", "cancel_consumer"):
        if len(values) != 1:
            raise usage
        return {"queue": values[0]}
    if values:  # shutdown
        raise usage
    return {}


def _seconds_or_none(command: str, value: str) -> float | None:
    if value.lower() == "none":
        return None
    try:
        return float(value)
    except ValueError:
        raise CommandError(f"{command}: {value!r} is not a number of seconds (nor none)") from None


def split_names(names: str | None) -> list[str] | None:
    listed = [name.strip() for name in (names or "").split(",") if name.strip()]
    return listed or None


def print_replies(replies: Replies, timeout: float, as_json: bool) -> None:
    """Each worker's answer (or error); then an error, exit 1, if a worker of the destination
    (or a known live one) did not answer, if none did, or if one could not apply it."""
    if as_json:
        typer.echo(orjson.dumps(replies.to_json()).decode())
    else:
        for worker, answer in sorted(replies.answers.items()):
            if isinstance(answer, str):
                typer.echo(f"-> {worker}: {answer}")
            else:
                typer.echo(f"-> {worker}:")
                typer.echo(orjson.dumps(answer, option=orjson.OPT_INDENT_2).decode())
        for worker, error in sorted(replies.errors.items()):
            typer.echo(f"-> {worker}: error: {error}")
    if replies.missing:
        names = ", ".join(replies.missing)
        raise CommandError(f"no answer within {timeout} s from: {names}")
    if not replies.answered:
        raise CommandError(f"no worker answered within {timeout} s")
    if replies.errors:
        raise CommandError(f"{len(replies.errors)} worker(s) could not apply it")


dlq_cli = typer.Typer(help="Dead letters: list, replay, purge.", no_args_is_help=True)
cli.add_typer(dlq_cli, name="dlq")


LetterIdOption = Annotated[
    str | None,
    typer.Option("--id", help="A dead letter's letter_id, or a task id (all its letters)."),
]


@dlq_cli.command("list")
@run_command
async def dlq_list(
    app: AppOption, queues: QueuesOption = None, wanted: LetterIdOption = None
) -> None:
    """Print the dead letters of the queues, one JSON object per line."""
    taskq_app = load_app(app)
    async with taskq_app:
        names = split_queues(taskq_app, queues)
        found = False
        for queue in names:
            for letter in await dlq.dead_letters(taskq_app, queue, wanted):
                found = True
                line = {
                    "letter_id": letter.id,
                    "queue": letter.queue,
                    "task_id": peek_id(letter.body),
                    "reason": letter.reason,
                    "failed_at": letter.failed_at,
                    "body": letter.body.decode("utf-8", errors="replace"),
                }
                typer.echo(orjson.dumps(line).decode())
        if wanted is not None and not found:
            raise no_dead_letter(wanted, names)


@dlq_cli.command("replay")
@run_command
async def dlq_replay(
    app: AppOption,
    queues: QueuesOption = None,
    wanted: LetterIdOption = None,
    replay_all: Annotated[bool, typer.Option("--all", help="Replay every letter.")] = False,
) -> None:
    """Publish dead letters again (retries reset) and remove them from the dead-letter queue."""
    if (wanted is None) == (not replay_all):
        raise CommandError("give --id ID or --all")
    taskq_app = load_app(app)
    async with taskq_app:
        names = split_queues(taskq_app, queues)
        found = False
        for queue in names:
            count, problems = await dlq.replay(taskq_app, queue, wanted)
            if wanted is not None and not count and not problems:
                continue  # none of this queue's letters
            found = True
            for problem in problems:
                typer.echo(f"Skipped {problem}", err=True)
            typer.echo(f"Replayed {count} dead letter(s) from {queue}")
        if wanted is not None and not found:
            raise no_dead_letter(wanted, names)


def no_dead_letter(wanted: str, queues: list[str]) -> CommandError:
    return CommandError(
        f"no dead letter has letter_id or task id {wanted!r} in queue(s) {', '.join(queues)}"
    )


@dlq_cli.command("purge")
@run_command
async def dlq_purge(
    app: AppOption, queues: QueuesOption = None, force: ForceOption = False
) -> None:
    """Delete the dead letters of the queues (after asking, unless -f)."""
    taskq_app = load_app(app)
    async with taskq_app:
        broker = await taskq_app.connected_broker()
        names = split_queues(taskq_app, queues)
        if not force:
            total = sum([await broker.dead_letter_length(queue) for queue in names])
            confirm_purge(f"{total} dead letter(s) of queue(s) {', '.join(names)}")
        for queue in names:
            typer.echo(
                f"Purged {await broker.purge_dead_letters(queue)} dead letter(s) from {queue}"
            )


def main() -> None:
    cli()
