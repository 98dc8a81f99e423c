"""The chaos suite end to end on its short setting: `python -m chaos --short` with the
garbage scenarios and the Redis kill storm, whose exit status says whether every input was
accounted for, no task was lost or run too often, and no worker died by itself.

Needs redis-server (and rabbitmq-server for the garbage on RabbitMQ, which the suite skips
without it, except in CI).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from support import in_ci

ROOT = Path(__file__).resolve().parent.parent.parent
SCENARIOS = ["garbage", "killstorm-redis"]
TIMEOUT = 600  # a failing scenario waits out its stall timeout; this run takes ~40 s

pytestmark = pytest.mark.integration


def test_short_garbage_and_kill_storm_account_for_everything() -> None:
    if shutil.which("redis-server") is None and not in_ci():
        pytest.skip("redis-server not found; install it with `make services`")
    env = {key: value for key, value in os.environ.items() if not key.startswith("TASKQ_")}
    only = [option for scenario in SCENARIOS for option in ("--only", scenario)]
    done = subprocess.run(
        [sys.executable, "-m", "chaos", "--short", *only],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    assert "| garbage-redis-keys | pass |" in done.stdout
    assert "| killstorm-redis | pass |" in done.stdout
