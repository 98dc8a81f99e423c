"""The libraries' virtualenvs, taskq's too: one per library under benchmarks/.peers/, made on
first use.

One each, because the peers' current releases pin redis-py to ranges that exclude each other
(kombu >= 6.1, arq < 6, saq < 8, taskiq-redis >= 8), and each holds its library and what it
needs, nothing else: taskq's installs this checkout (editable) with its redis and amqp extras,
not the development virtualenv, whose extras weigh on a worker (redis-py imports the
OpenTelemetry SDK when it is installed). Every one is made from the interpreter that the
project's virtualenv was made from, so all rows run on the same CPython build. A venv is
reinstalled when its requirements file (benchmarks/requirements/NAME.txt) changes, or, for one
that installs the checkout (`-e .`), its pyproject.toml.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent
ROOT = BENCHMARKS.parent  # the checkout: `-e .` in a requirements file installs it
WORK = BENCHMARKS / ".peers"  # ignored by git: venvs, worker logs, raw results
REQUIREMENTS = BENCHMARKS / "requirements"
INSTALL_TIMEOUT = 900


def python(name: str) -> Path:
    return WORK / name / "bin" / "python"


def ensure(name: str) -> Path:
    """The interpreter of venv `name`, created or reinstalled when its requirements changed."""
    venv = WORK / name
    wanted = (REQUIREMENTS / f"{name}.txt").read_text()
    if any(line.startswith("-e .") for line in wanted.splitlines()):
        wanted += (ROOT / "pyproject.toml").read_text()
    stamp = venv / "requirements.installed"
    if stamp.is_file() and stamp.read_text() == wanted and python(name).exists():
        return python(name)
    print(f"[bench] installing {name} into {venv.relative_to(BENCHMARKS.parent)}", flush=True)
    subprocess.run([sys._base_executable, "-m", "venv", "--clear", str(venv)], check=True)
    pip = [str(python(name)), "-m", "pip", "install", "-qq", "--disable-pip-version-check"]
    subprocess.run(
        [*pip, "-r", str(REQUIREMENTS / f"{name}.txt")],
        cwd=ROOT,
        check=True,
        timeout=INSTALL_TIMEOUT,
    )
    stamp.write_text(wanted)
    return python(name)
