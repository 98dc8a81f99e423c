"""`make demo` runs: a worker process and the producer, on the embedded SQLite default."""

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

DEMO = Path(__file__).resolve().parents[2] / "examples" / "quickstart" / "demo.py"


def test_demo_prints_results_and_stops_cleanly() -> None:
    done = subprocess.run([sys.executable, str(DEMO)], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "add(4, 5)             = 9" in done.stdout
    assert "resize (thread)       = 'cat.png resized to 128px'" in done.stdout
    assert "divide(1, 0) failed   : ZeroDivisionError" in done.stdout
    assert "200 I/O tasks" in done.stdout
    assert "chain                 = 'Result: 18'" in done.stdout
    assert "chord of 100          = 9900" in done.stdout
    assert "chain(chord, mul)     = 40" in done.stdout
    assert "worker stopped (exit status 0)" in done.stdout
