"""The benchmark harness end to end on its smallest setting: `python -m benchmarks --quick
--only memory` starts its throwaway Redis, runs taskq's drain and round trip, and reports.

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

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.integration


def test_quick_memory_run_prints_a_table(tmp_path: Path) -> None:
    if shutil.which("redis-server") is None and os.environ.get("CI", "") not in {"true", "1"}:
        pytest.skip("redis-server not found; install it with `make services`")
    results = tmp_path / "RESULTS.md"
    options = ["--quick", "--only", "memory", "--n", "drain=200", "--n", "round_trip=20"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKQ_")}
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", *options, "--results", str(results)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "| drain no-op tasks | memory | taskq |" in done.stdout
    assert "| round trip, delay + get | memory | taskq |" in done.stdout
    report = results.read_text()
    assert "## Machine" in report and "redis-benchmark" in report
