"""The benchmark harness end to end on its smallest setting: `python -m benchmarks --quick
--only memory` starts its throwaway Redis, runs taskq's drain and round trip, and reports;
`--only idle --only redis` measures an idle `taskq worker` process, `--only enqueue_sync`
publishes from a thread through `delay_sync()`; `python -m benchmarks.scale` drains on one
Redis and on a three-master Redis Cluster.

No figures are checked (timings belong to benchmarks/RESULTS.md, not to tests), only that a
table comes out. Needs redis-server, like the integration tests; no peers.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from support import in_ci

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.integration


def _python_m(*argv: str, timeout: float) -> str:
    """`python -m ARGV` in the checkout, without the caller's TASKQ_ settings; its output."""
    if shutil.which("redis-server") is None and not in_ci():
        pytest.skip("redis-server not found; install it with `make services`")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKQ_")}
    done = subprocess.run(
        [sys.executable, "-m", *argv],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _bench(results: Path, *options: str) -> str:
    """`python -m benchmarks --quick OPTIONS`, its report in `results`; its table."""
    return _python_m("benchmarks", "--quick", *options, "--results", str(results), timeout=120)


def test_quick_memory_run_prints_a_table(tmp_path: Path) -> None:
    results = tmp_path / "RESULTS.md"
    table = _bench(results, "--only", "memory", "--n", "drain=200", "--n", "round_trip=20")
    assert "| drain no-op tasks | memory | taskq |" in table
    assert "| round trip, delay + get | memory | taskq |" in table
    assert "One redis-py PING at a time" in table  # the round trip's floor, in the same run
    report = results.read_text()
    assert "## Machine" in report and "redis-benchmark" in report
    assert "One redis-py PING at a time" in report


def test_idle_worker_rss_on_redis(tmp_path: Path) -> None:
    """A `taskq worker` subprocess: the idle workload runs where a worker is a process."""
    table = _bench(tmp_path / "RESULTS.md", "--only", "idle", "--only", "redis")
    assert "| worker at idle | redis | taskq |" in table
    assert "idle RSS MB" in table


def test_enqueue_from_sync_code_on_redis(tmp_path: Path) -> None:
    table = _bench(tmp_path / "RESULTS.md", "--only", "enqueue_sync", "--only", "redis")
    assert "| enqueue from sync code, one at a time | redis | taskq |" in table


def test_scale_drains_every_layout() -> None:
    """`python -m benchmarks.scale` (docs/scaling.md's figures) drains all its tasks on one
    Redis, on a three-master cluster, and on the cluster with the results on one Redis."""
    table = _python_m(
        "benchmarks.scale", "--n", "400", "--runs", "1", "--processes", "1", timeout=180
    )
    layouts = [line.split(" | ")[0] for line in table.splitlines() if "| 1 | 6 |" in line]
    assert layouts == [
        "| one Redis",
        "| Redis Cluster, 3 masters",
        "| Redis Cluster, 3 masters; results on one Redis",
    ]
