"""Multi-process workers on Redis: the supervisor of `--processes`, the process pool, recycling,
autoscaling and the daemon options, with real `taskq worker` processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import anyio
import pytest
from servers import RedisServer
from support import INTEGRATION, WorkerProcess, wait_for

from taskq import ChordError, TaskError, TaskQ, chord, signature
from taskq.worker.scrape import free_port

pytestmark = pytest.mark.integration

StartWorker = Callable[..., WorkerProcess]
APP = "process_tasks:app"


@pytest.fixture
def broker_url(redis_server: RedisServer) -> str:
    return f"{redis_server.url}?prefix=t{uuid.uuid4().hex[:12]}:"


@pytest.fixture
def transport_options() -> dict[str, object]:
    return {"visibility_timeout": 2}


@pytest.fixture
async def producer(broker_url: str) -> AsyncIterator[TaskQ]:
    app = TaskQ("producer", broker=broker_url)
    async with app:
        yield app


def start_processes(start_worker: StartWorker, count: int, *args: str) -> WorkerProcess:
    """A supervisor of `count` worker processes, once every one of them is ready."""
    worker = start_worker("--processes", str(count), "-n", "w", *args, app=APP)
    wait_for(lambda: worker.output().count(" ready: ") >= count, timeout=30)
    return worker


async def test_a_killed_worker_process_is_replaced_and_loses_nothing(
    producer: TaskQ, start_worker: StartWorker
) -> None:
    supervisor = start_processes(start_worker, 2, "-c", "10")
    assert "Worker w-1 ready" in supervisor.output() and "Worker w-2 ready" in supervisor.output()
    results = [await producer.send_task("ptest.pid", args=[0.02]) for _ in range(300)]
    victim = await results[0].get(timeout=20)
    os.kill(victim, signal.SIGKILL)
    pids = [await result.get(timeout=60) for result in results]
    assert len(pids) == 300
    assert f"(pid {victim}) was killed by SIGKILL; starting a replacement" in supervisor.output()
    wait_for(lambda: supervisor.output().count(" ready: ") == 3)  # the replacement too
    survivor = next(pid for pid in pids if pid != victim)
    assert await a_task_runs_on_a_new_process(producer, known={victim, survivor})


async def a_task_runs_on_a_new_process(producer: TaskQ, known: set[int]) -> bool:
    """Whether, within 30 s, some task runs on a process not in `known`: batches of short
    tasks (which a busy survivor alone does not take all of) until one does."""
    with anyio.move_on_after(30):
        while True:
            batch = [await producer.send_task("ptest.pid", args=[0.05]) for _ in range(40)]
            if {await result.get(timeout=20) for result in batch} - known:
                return True
    return False


async def test_warm_shutdown_finishes_the_running_tasks_of_every_process(
    producer: TaskQ, start_worker: StartWorker, tmp_path: Path
) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    supervisor = start_processes(start_worker, 2, "-c", "2", "--prefetch-multiplier", "1")
    results = [
        await producer.send_task("ptest.started", args=[str(markers), 2.0]) for _ in range(4)
    ]
    wait_for(lambda: len(list(markers.iterdir())) == 4)
    started_in = {path.name.partition("-")[0] for path in markers.iterdir()}
    assert len(started_in) == 2  # two tasks running in each process
    supervisor.signal(signal.SIGINT)  # passed on to each child as SIGTERM: warm
    assert supervisor.wait(timeout=30) == 0
    pids = [await result.get(timeout=5) for result in results]
    assert {str(pid) for pid in pids} == started_in
    assert "Supervisor stopped: every worker process has exited" in supervisor.output()


async def test_a_hard_time_limit_kills_cpu_bound_code_and_replaces_its_pool_process(
    producer: TaskQ, start_worker: StartWorker
) -> None:
    worker = start_worker("--pool", "process", "--pool-processes", "1", app=APP)
    wait_for(lambda: "process pool 1" in worker.output())
    before = await (await producer.send_task("ptest.plain_pid")).get(timeout=30)
    failing = await producer.send_task("ptest.plain_fail", args=["bad input"])
    with pytest.raises(ValueError, match="bad input") as raised:
        await failing.get(timeout=30)
    assert 'process_tasks.py", line' in str(raised.value.remote_traceback)  # type: ignore[attr-defined]
    soft = await producer.send_task("ptest.soft_limited", args=[30], soft_time_limit=0.5)
    assert await soft.get(timeout=20) == "cleaned up"
    spinning = await producer.send_task("ptest.spin", args=[60], time_limit=1)
    with pytest.raises(TaskError, match=r"TimeLimitExceeded.*hard time limit \(1s?\)"):
        await spinning.get(timeout=20)
    wait_for(lambda: not running(before))  # stopped, not left spinning
    after = await (await producer.send_task("ptest.plain_pid")).get(timeout=30)
    assert after not in (before, worker.pid)
    assert f"Pool process {before} killed" in worker.output()

    os.kill(after, signal.SIGKILL)  # dies idle: the next task goes to its replacement
    wait_for(lambda: not running(after))
    replacement = await (await producer.send_task("ptest.plain_pid")).get(timeout=30)
    assert replacement != after
    dying = await producer.send_task("ptest.die")  # dies running: the task is lost with it
    with pytest.raises(TaskError, match=r"WorkerLostError.*ended while running the task"):
        await dying.get(timeout=30)
    assert "(killed by SIGKILL)" in str(await dying.traceback())


async def test_add_to_chord_in_a_pool_process_fails_the_chord_saying_why(
    producer: TaskQ, start_worker: StartWorker
) -> None:
    worker = start_worker("--pool", "process", "--pool-processes", "1", app=APP)
    wait_for(lambda: "process pool 1" in worker.output())
    header = [signature("ptest.grow_chord", app=producer)]
    grown = chord(header, signature("ptest.plain_pid", app=producer, immutable=True))
    with pytest.raises(ChordError, match=r"add_to_chord_sync\(\) is not available in a process"):
        await (await grown.apply_async()).get(timeout=30)


async def test_max_tasks_per_child_recycles_pool_processes_without_losing_a_task(
    producer: TaskQ, start_worker: StartWorker
) -> None:
    start_worker(
        "--pool", "process", "--pool-processes", "2", "--max-tasks-per-child", "10", app=APP
    )
    results = [await producer.send_task("ptest.plain_pid") for _ in range(100)]
    pids = [await result.get(timeout=60) for result in results]
    assert len(pids) == 100
    assert len(set(pids)) >= 10
    assert max(pids.count(pid) for pid in set(pids)) <= 10


async def test_max_tasks_per_child_recycles_worker_processes_after_a_warm_drain(
    producer: TaskQ, start_worker: StartWorker
) -> None:
    supervisor = start_processes(start_worker, 2, "-c", "4", "--max-tasks-per-child", "10")
    results = [await producer.send_task("ptest.pid", args=[0.01]) for _ in range(30)]
    pids = [await result.get(timeout=60) for result in results]
    assert len(pids) == 30
    assert len(set(pids)) >= 3  # two processes, and at least one started after a recycling
    assert "recycled after 10 tasks (max tasks per child)" in supervisor.output()
    assert "recycled; starting another" in supervisor.output()


async def test_max_memory_per_child_recycles_the_pool_process_of_a_leaking_task(
    producer: TaskQ, start_worker: StartWorker
) -> None:
    limit_kb = 160_000
    worker = start_worker(
        "--pool", "process", "--pool-processes", "1", "--max-memory-per-child", str(limit_kb),
        app=APP,
    )  # fmt: skip
    first = await (await producer.send_task("ptest.leak", args=[1])).get(timeout=30)
    pages = int((await anyio.Path(f"/proc/{first}/statm").read_text()).split()[1])
    resident_kb = pages * os.sysconf("SC_PAGE_SIZE") // 1024
    megabytes = (limit_kb - resident_kb) // 1024 // 2 + 5  # the second over the limit
    pids = [first] + [
        await (await producer.send_task("ptest.leak", args=[megabytes])).get(timeout=30)
        for _ in range(3)
    ]
    assert pids[0] == pids[1] == pids[2] != pids[3]
    assert f"Pool process {first} recycled as its memory" in worker.output()


async def test_autoscale_grows_slots_and_pool_under_a_backlog_and_shrinks_when_idle(
    producer: TaskQ, start_worker: StartWorker
) -> None:
    worker = start_worker("--pool", "process", "--autoscale", "4,1", app=APP)
    assert "concurrency 1 (autoscale 1-4)" in worker.output()
    results = [await producer.send_task("ptest.nap", args=[0.5]) for _ in range(20)]
    pids = {await result.get(timeout=60) for result in results}
    assert len(pids) >= 3  # the pool grew with the slots
    assert "Autoscale: concurrency 1 -> 4" in worker.output()
    wait_for(lambda: "Autoscale: concurrency 4 -> 1" in worker.output(), timeout=20)
    wait_for(lambda: worker.output().count("recycled as the pool shrank") == 3)


def taskq_command(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "taskq", *args]
    return subprocess.run(
        argv, env=env, cwd=INTEGRATION, capture_output=True, text=True, timeout=60
    )


async def test_a_detached_worker_holds_its_pidfile_and_reopens_its_logfile_on_sighup(
    producer: TaskQ, worker_env: dict[str, str], tmp_path: Path
) -> None:
    pidfile, logfile = tmp_path / "worker.pid", tmp_path / "worker.log"
    daemon = ["--pidfile", str(pidfile), "--logfile", str(logfile)]
    pool = ["--pool", "process", "--pool-processes", "1"]
    started = taskq_command(worker_env, "worker", "-A", APP, "--detach", *pool, *daemon)
    assert started.returncode == 0, started.stderr
    wait_for(lambda: logfile.exists() and " ready: " in logfile.read_text())
    pid = int(pidfile.read_text())
    try:
        for command in ("worker", "beat"):
            refused = taskq_command(worker_env, command, "-A", APP, *daemon)
            assert refused.returncode == 1
            held = f"Error: pidfile {pidfile} is held by process {pid}, which is running"
            assert held in refused.stderr
        logfile.rename(tmp_path / "worker.log.1")  # as logrotate does
        os.kill(pid, signal.SIGHUP)
        wait_for(logfile.exists)
        assert await (await producer.send_task("ptest.pid")).get(timeout=20) == pid
        in_pool = await (await producer.send_task("ptest.log_plain", ["rotated"])).get(timeout=20)
        assert in_pool != pid
        wait_for(lambda: "ptest.pid[" in logfile.read_text())
        wait_for(lambda: "rotated" in logfile.read_text())  # the pool process reopened it too
    finally:
        os.kill(pid, signal.SIGTERM)
    wait_for(lambda: not pidfile.exists())  # removed by the worker on its way out
    assert "Worker" in (tmp_path / "worker.log.1").read_text()


def test_a_stale_pidfile_is_replaced(start_worker: StartWorker, tmp_path: Path) -> None:
    pidfile = tmp_path / "worker.pid"
    pidfile.write_text("4194305\n")  # above Linux's highest pid: no such process
    worker = start_worker("--pidfile", str(pidfile), app=APP)
    assert pidfile.read_text() == f"{worker.pid}\n"
    assert "Replacing the stale pidfile" in worker.output()


async def test_one_metrics_port_serves_every_worker_process(
    producer: TaskQ, start_worker: StartWorker
) -> None:
    port = free_port()
    start_processes(start_worker, 2, "-c", "2", "--metrics-port", str(port))
    results = [await producer.send_task("ptest.pid", args=[0.05]) for _ in range(20)]
    by_pid = Counter([await result.get(timeout=30) for result in results])
    assert len(by_pid) == 2

    def scrape(path: str) -> tuple[int, str]:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as answer:
            return answer.status, answer.read().decode()

    def counted(text: str, worker: str) -> float:
        line = next(
            line
            for line in text.splitlines()
            if line.startswith("taskq_tasks_total{") and f'worker="{worker}"' in line
        )
        return float(line.rpartition(" ")[2])

    status, text = await anyio.to_thread.run_sync(scrape, "/metrics")
    assert status == 200
    assert sorted([counted(text, "w-1"), counted(text, "w-2")]) == sorted(by_pid.values())
    assert await anyio.to_thread.run_sync(scrape, "/healthz") == (200, "ok\n")


def test_worker_processes_that_cannot_start_stop_their_supervisor(
    worker_env: dict[str, str],
) -> None:
    done = taskq_command(worker_env, "worker", "-A", APP, "--processes", "2", "--pool", "fork")
    assert done.returncode == 2
    assert "Error: --pool must be one of thread, process, not 'fork'" in done.stderr
    assert "cannot start (exit status 2): stopping" in done.stderr


async def test_a_signed_message_runs_in_the_process_pool(
    broker_url: str, worker_env: dict[str, str], start_worker: StartWorker
) -> None:
    key = "pool-" + "4" * 40
    worker_env["TASKQ_MESSAGE_SIGNING_KEY"] = key
    worker = start_worker("--pool", "process", "--pool-processes", "1", app=APP)
    async with TaskQ("producer", broker=broker_url, message_signing_key=key) as signed:
        assert await (await signed.send_task("ptest.plain_pid")).get(timeout=30) != worker.pid


def running(pid: int) -> bool:
    """Whether process `pid` exists and is not a zombie waiting to be reaped."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):  # gone, or reaped while being read
        return False
