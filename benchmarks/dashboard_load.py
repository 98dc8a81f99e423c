"""The dashboard under load: `python -m benchmarks.dashboard_load [--rate 200] [--seconds 60]
[--max-tasks 10000]`.

A throwaway Redis, one `taskq worker -E`, one `taskq dashboard` with a page open on it (a
live stream, and the tasks page fetched again on each change, as the page's script does),
and a producer sending `--rate` tasks a second. Prints the dashboard process's CPU (% of one
core, from /proc, after a warm-up) and its resident memory every few seconds: memory grows
while the window fills to --max-tasks, then stays flat.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio
import httpx

from benchmarks.servers import ROOT, load_test_servers
from taskq import TaskQ

TICKS = os.sysconf("SC_CLK_TCK")
BATCH_INTERVAL = 0.05  # seconds between the producer's batches
WARM_UP = 5.0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def start(argv: list[str], env: dict[str, str], log: Path, ready: str) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        process = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while ready not in log.read_text(errors="replace"):
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"{argv[3]} did not start:\n{log.read_text(errors='replace')}")
        time.sleep(0.05)
    return process


async def watch_page(url: str, stop: anyio.Event) -> int:
    """An open tasks page: the live stream, and the page fetched on each change."""
    fetched = 0
    async with (
        httpx.AsyncClient(base_url=url, timeout=30) as http,
        http.stream("GET", "/api/stream") as stream,
    ):
        async for line in stream.aiter_lines():
            if stop.is_set():
                break
            if line.startswith("event: change"):
                (await http.get("/tasks")).raise_for_status()
                fetched += 1
    return fetched


async def produce(app: TaskQ, rate: int, seconds: float) -> int:
    per_batch, sent = max(1, round(rate * BATCH_INTERVAL)), 0
    began = time.monotonic()
    while (elapsed := time.monotonic() - began) < seconds:
        due = int(elapsed * rate) + per_batch
        async with anyio.create_task_group() as batch:
            for number in range(sent, due):
                batch.start_soon(app.send_task, "itest.add", [number, 1])
        sent = max(sent, due)
        await anyio.sleep(BATCH_INTERVAL)
    return sent


async def measure(url: str, broker: str, pid: int, rate: int, seconds: float) -> None:
    stop = anyio.Event()
    fetched: list[int] = []
    async with TaskQ("load", broker=broker) as app, anyio.create_task_group() as tg:

        async def page() -> None:
            fetched.append(await watch_page(url, stop))

        async def sample() -> None:
            began, cpu_at_warm = time.monotonic(), None
            while not stop.is_set():
                await anyio.sleep(5)
                elapsed = time.monotonic() - began
                line = f"{elapsed:5.0f} s  rss {rss_mib(pid):6.1f} MiB"
                if cpu_at_warm is None and elapsed >= WARM_UP:
                    cpu_at_warm = (time.monotonic(), cpu_seconds(pid))
                elif cpu_at_warm is not None:
                    wall, cpu = time.monotonic() - cpu_at_warm[0], cpu_seconds(pid) - cpu_at_warm[1]
                    line += f"  cpu {100 * cpu / wall:5.1f} % of a core since {WARM_UP:.0f} s"
                async with httpx.AsyncClient(base_url=url) as http:
                    overview = (await http.get("/api/overview")).json()
                line += f"  window {overview['tasks_in_window']}"
                print(line, flush=True)

        tg.start_soon(page)
        tg.start_soon(sample)
        sent = await produce(app, rate, seconds)
        stop.set()
        tg.cancel_scope.cancel()
    print(f"sent {sent} tasks in {seconds:.0f} s ({sent / seconds:.0f}/s)")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.dashboard_load")
    parser.add_argument("--rate", type=int, default=200, help="tasks per second")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--max-tasks", type=int, default=10_000)
    options = parser.parse_args()
    servers = load_test_servers()
    with tempfile.TemporaryDirectory(prefix="taskq-dashboard-load-") as folder:
        place = Path(folder)
        redis = servers.RedisServer(place / "redis")
        redis.start()
        processes: list[subprocess.Popen[bytes]] = []
        try:
            env = {k: v for k, v in os.environ.items() if not k.startswith("TASKQ_")}
            env["TASKQ_BROKER_URL"] = redis.url
            env["PYTHONPATH"] = str(ROOT / "tests" / "integration")
            taskq = [sys.executable, "-m", "taskq"]
            app = ["-A", "itest_tasks:app"]
            worker = [*taskq, "worker", *app, "-E", "-c", "50", "--loglevel", "info"]
            processes.append(start(worker, env, place / "worker.log", "ready"))
            [port] = servers.free_ports(1)
            dashboard = [*taskq, "dashboard", *app, "--no-auth", "--port", str(port)]
            dashboard += ["--max-tasks", str(options.max_tasks)]
            processes.append(start(dashboard, env, place / "dashboard.log", "Dashboard ready"))
            url, pid = f"http://127.0.0.1:{port}", processes[-1].pid
            print(f"dashboard pid {pid}, --max-tasks {options.max_tasks}, {options.rate} tasks/s")
            anyio.run(measure, url, redis.url, pid, options.rate, options.seconds)
        finally:
            for process in reversed(processes):
                process.terminate()
                process.wait(timeout=30)
            redis.stop()


if __name__ == "__main__":
    main()
