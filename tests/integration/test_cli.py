"""The real `taskq` command as a subprocess: what a user sees on stdout and stderr, and the
exit status. The broker is an SQLite file (tests/integration/conftest.py); the dead-letter
commands run on Redis and RabbitMQ too."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest
from servers import RabbitMQServer, RedisServer
from support import TaskqProcess, WorkerProcess, wait_for

import taskq
from taskq import TaskQ
from taskq.message import Message, decode, encode
from taskq.serializers import SERIALIZERS

pytestmark = pytest.mark.integration

INTEGRATION = Path(__file__).parent
LETTER_FIELDS = {"letter_id", "queue", "task_id", "reason", "failed_at", "body"}


def run_taskq(
    env: dict[str, str], *args: str, cwd: Path = INTEGRATION
) -> subprocess.CompletedProcess[str]:
    """Run taskq with no terminal: stdin is /dev/null, whoever runs the tests."""
    return subprocess.run(
        [sys.executable, "-m", "taskq", *args],
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
    )


def one_line_error(done: subprocess.CompletedProcess[str]) -> str:
    """The single line a failed command printed on stderr."""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    return lines[0]


def test_version_prints_the_package_version(worker_env: dict[str, str]) -> None:
    done = run_taskq(worker_env, "--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"taskq {taskq.__version__}\n"


# module name: (its source, the error, where it happened)
BROKEN_MODULES = {
    "syntax": (
        'from taskq import TaskQ\napp = TaskQ("x"\n',
        "SyntaxError: '(' was never closed",
        "syntax.py:2",
    ),
    "dependency": (
        "from taskq import TaskQ\n\nimport no_such_dependency_xyz\n",
        "ModuleNotFoundError: No module named 'no_such_dependency_xyz'",
        "dependency.py:3",
    ),
    # The innermost frame of the user's code is in the module it imports, below importlib's.
    "raising": ("import settings_of_raising\n", "KeyError: 'API_KEY'", "settings_of_raising.py:2"),
}


@pytest.mark.parametrize("module", sorted(BROKEN_MODULES))
def test_an_app_module_that_fails_to_import_is_one_line_with_its_place(
    worker_env: dict[str, str], tmp_path: Path, module: str
) -> None:
    source, error, where = BROKEN_MODULES[module]
    (tmp_path / f"{module}.py").write_text(source)
    settings = "def read():\n    return {}['API_KEY']\n\n\nread()\n"
    (tmp_path / "settings_of_raising.py").write_text(settings)
    done = run_taskq(worker_env, "status", "-A", f"{module}:app", cwd=tmp_path)
    assert done.returncode == 2
    assert one_line_error(done) == f"Error: cannot import {module!r}: {error} (at {where})"


TWO_APPS_AND_A_FUNCTION = """\
from taskq import TaskQ

my_app, other_app = TaskQ("x"), TaskQ("y")


def helper() -> None: ...
"""


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("tasks", "module 'tasks' has no attribute 'app'; its TaskQ apps: my_app, other_app"),
        (
            "tasks:nothing",
            "module 'tasks' has no attribute 'nothing'; its TaskQ apps: my_app, other_app",
        ),
        ("plain", "module 'plain' has no attribute 'app', nor any TaskQ app"),
        ("tasks:helper", "tasks:helper is a function, not a TaskQ app"),
        (
            "no_such_module",
            "cannot import 'no_such_module': ModuleNotFoundError: No module named 'no_such_module'",
        ),
    ],
)
def test_an_app_reference_that_names_no_app_is_one_line(
    worker_env: dict[str, str], tmp_path: Path, spec: str, message: str
) -> None:
    (tmp_path / "tasks.py").write_text(TWO_APPS_AND_A_FUNCTION)
    (tmp_path / "plain.py").write_text("VALUE = 1\n")
    done = run_taskq(worker_env, "status", "-A", spec, cwd=tmp_path)
    assert done.returncode == 2
    assert one_line_error(done) == f"Error: {message}"


def test_a_reader_that_leaves_early_ends_the_command_quietly(worker_env: dict[str, str]) -> None:
    """`taskq beat --list | head -1`: no "Broken pipe", no BrokenPipeError traceback."""
    schedule = {f"entry-{n}": {"task": "itest.add", "schedule": 60.0} for n in range(1500)}
    env = {**worker_env, "TASKQ_BEAT_SCHEDULE": json.dumps(schedule)}
    command = [sys.executable, "-m", "taskq", "beat", "--list", "-A", "itest_tasks:app"]
    with subprocess.Popen(
        command, env=env, cwd=INTEGRATION, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as process:
        assert process.stdout is not None and process.stderr is not None
        assert process.stdout.readline().startswith(b"entry-")
        process.stdout.close()  # ~120 kB more to write: more than the pipe holds
        stderr = process.stderr.read().decode()
        assert process.wait(timeout=30) == 1
    assert stderr == ""


async def test_call_refuses_a_task_the_app_does_not_know_unless_forced(
    worker_env: dict[str, str], sqlite_url: str
) -> None:
    async with TaskQ("producer", broker=sqlite_url) as producer:
        broker = await producer.connected_broker()
        typo = run_taskq(worker_env, "call", "itest.ad", "-A", "itest_tasks:app")
        assert typo.returncode == 1
        assert one_line_error(typo) == (
            "Error: unknown task 'itest.ad' (did you mean 'itest.add'?); --force sends it anyway"
        )
        assert await broker.queue_length("default") == 0
        forced = run_taskq(worker_env, "call", "workers.only", "--force", "-A", "itest_tasks:app")
        assert forced.returncode == 0, forced.stderr
        consumer = broker.consume(["default"], 1)
        with anyio.fail_after(10):
            delivery = await anext(consumer)
        await consumer.aclose()
        message = decode(delivery.body, frozenset(SERIALIZERS))
        assert (message.task, message.id) == ("workers.only", forced.stdout.strip())


def in_a_terminal(env: dict[str, str], *args: str, typed: bytes) -> tuple[int, str, str]:
    """Run taskq with a terminal as its stdin, `typed` at the keyboard: (exit status,
    stdout, stderr)."""
    keyboard, terminal = os.openpty()
    try:
        with subprocess.Popen(
            [sys.executable, "-m", "taskq", *args],
            env=env,
            cwd=INTEGRATION,
            stdin=terminal,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        ) as process:
            os.write(keyboard, typed)
            out, err = process.communicate(timeout=30)
    finally:
        os.close(keyboard)
        os.close(terminal)
    return process.returncode, out.decode(), err.decode()


PURGES = {
    "purge": ("up to 2 message(s) from queue(s) default", "Purged 2 message(s) from default"),
    "dlq purge": ("2 dead letter(s) of queue(s) default", "Purged 2 dead letter(s) from default"),
}


@pytest.mark.parametrize("command", sorted(PURGES))
async def test_purge_asks_first_and_never_purges_unasked(
    worker_env: dict[str, str], sqlite_url: str, command: str
) -> None:
    what, purged = PURGES[command]
    args = [*command.split(), "-A", "itest_tasks:app"]
    async with TaskQ("producer", broker=sqlite_url) as producer:
        broker = await producer.connected_broker()

        async def held() -> int:
            if command == "purge":
                return await broker.queue_length("default")
            return await broker.dead_letter_length("default")

        async def fill() -> None:
            for n in range(2 - await held()):
                if command == "purge":
                    await producer.send_task("itest.add", args=[n, n])
                else:
                    await broker.add_dead_letter("default", b"{}", "retries exhausted")

        await fill()
        unasked = run_taskq(worker_env, *args)
        assert unasked.returncode == 1
        assert one_line_error(unasked) == (
            f"Error: refusing to purge {what} unconfirmed: stdin is not a terminal"
            " (pass -f/--force)"
        )
        assert await held() == 2

        status, out, err = in_a_terminal(worker_env, *args, typed=b"\n")  # the default: no
        assert (status, out, err) == (1, f"Purge {what}? [y/N]: ", "Error: nothing purged\n")
        assert await held() == 2

        status, out, err = in_a_terminal(worker_env, *args, typed=b"y\n")
        assert (status, out, err) == (0, f"Purge {what}? [y/N]: {purged}\n", "")
        assert await held() == 0

        await fill()
        for force in ("-f", "--force"):
            forced = run_taskq(worker_env, *args, force)
            assert forced.returncode == 0, forced.stderr
            assert forced.stdout == f"{purged}\n"
            assert await held() == 0
            await fill()


@pytest.fixture(params=["sqlite", "redis", "amqp"])
def dlq_broker(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A broker URL; the servers are shared, so each case takes a queue of its own."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/broker.db"
    if request.param == "redis":
        redis: RedisServer = request.getfixturevalue("redis_server")
        return f"{redis.url}?prefix=t{uuid.uuid4().hex[:12]}:"
    rabbitmq: RabbitMQServer = request.getfixturevalue("rabbitmq_server")
    return rabbitmq.url


async def test_dlq_finds_a_letter_by_its_letter_id_or_its_task_id(
    worker_env: dict[str, str], dlq_broker: str, tmp_path: Path
) -> None:
    queue, other = f"q-{uuid.uuid4().hex[:10]}", f"q-{uuid.uuid4().hex[:10]}"
    env = {
        **worker_env,
        "TASKQ_BROKER_URL": dlq_broker,
        "TASKQ_RESULT_BACKEND": f"sqlite:///{tmp_path}/results.db",
    }

    def dlq(*args: str) -> subprocess.CompletedProcess[str]:
        return run_taskq(env, "dlq", *args, "-Q", f"{queue},{other}", "-A", "itest_tasks:app")

    def listed(*args: str) -> list[dict[str, Any]]:
        done = dlq("list", *args)
        assert done.returncode == 0, done.stderr
        return [orjson.loads(line) for line in done.stdout.splitlines()]

    first, second = (
        Message(id=uuid.uuid4().hex, task="itest.add", args=[n, n], queue=other) for n in (1, 2)
    )
    async with TaskQ("producer", broker=dlq_broker, backend=env["TASKQ_RESULT_BACKEND"]) as app:
        broker = await app.connected_broker()
        for message in (first, second):
            await broker.add_dead_letter(queue, encode(message), "retries exhausted")

        letters = listed()
        assert [(letter["task_id"], letter["queue"]) for letter in letters] == [
            (first.id, queue),
            (second.id, queue),
        ]
        assert all(set(letter) == LETTER_FIELDS for letter in letters)
        second_letter_id = letters[1]["letter_id"]
        assert listed("--id", second_letter_id) == [letters[1]]
        assert listed("--id", first.id) == [letters[0]]

        by_letter_id = dlq("replay", "--id", second_letter_id)
        assert (by_letter_id.returncode, by_letter_id.stdout) == (
            0,
            f"Replayed 1 dead letter(s) from {queue}\n",
        )
        by_task_id = dlq("replay", "--id", first.id)
        assert by_task_id.stdout == f"Replayed 1 dead letter(s) from {queue}\n"
        assert await broker.dead_letter_length(queue) == 0
        assert await broker.queue_length(other) == 2  # the messages' own queue

        for command in ("list", "replay"):
            missing = dlq(command, "--id", second.id)  # replayed: no longer a dead letter
            assert missing.returncode == 1
            assert one_line_error(missing) == (
                f"Error: no dead letter has letter_id or task id {second.id!r}"
                f" in queue(s) {queue}, {other}"
            )


def test_events_tails_a_worker_run_with_e(worker_env: dict[str, str], tmp_path: Path) -> None:
    """`taskq events --json` prints, one JSON object per line, the events of a task run by a
    `taskq worker -E`, in order; the text form names the task."""
    worker = WorkerProcess(worker_env, tmp_path / "worker.log", ["-E"])
    as_json = TaskqProcess(worker_env, tmp_path / "json.log", ["events", "--json"], "Listening")
    as_text = TaskqProcess(worker_env, tmp_path / "text.log", ["events"], "Listening")
    try:
        sent = run_taskq(
            worker_env, "call", "itest.add", "--args", "[2, 3]", "-A", "itest_tasks:app"
        )
        assert sent.returncode == 0, sent.stderr
        task_id = sent.stdout.strip()

        def lines() -> list[dict[str, Any]]:
            found = [
                orjson.loads(line) for line in as_json.output().splitlines() if line[:1] == "{"
            ]
            return [event for event in found if event["uuid"] == task_id]

        wait_for(lambda: [e["type"] for e in lines()][-1:] == ["task-succeeded"])
        received, started, succeeded = lines()
        assert [received["type"], started["type"]] == ["task-received", "task-started"]
        assert (received["name"], received["args"], succeeded["result"]) == (
            "itest.add",
            "[2, 3]",
            "5",
        )
        wait_for(lambda: f"task-succeeded [{task_id}] result=5" in as_text.output())
        assert f"task-received itest.add[{task_id}] args=[2, 3]" in as_text.output()
    finally:
        for process in (as_json, as_text, worker):
            process.stop()
