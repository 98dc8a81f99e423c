"""`make demo`: a real `taskq worker` process plus the producer, on the embedded SQLite default.

Runs in this folder so that both use ./taskq.db; the worker gets SIGTERM at the end
(a warm shutdown) and the demo checks it exited cleanly.
"""

import os
import signal
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    for stale in HERE.glob("taskq.db*"):
        stale.unlink()
    env = {**os.environ, "PYTHONPATH": str(HERE)}
    env.pop("TASKQ_BROKER_URL", None)
    env.pop("TASKQ_RESULT_BACKEND", None)
    command = [
        sys.executable,
        "-m",
        "taskq",
        "worker",
        "-A",
        "tasks:app",
        "-Q",
        "default,images",
        "-c",
        "50",
    ]
    print("$", " ".join(["taskq", *command[3:]]), flush=True)
    worker = subprocess.Popen([*command, "--loglevel", "warning"], cwd=HERE, env=env)
    try:
        producer = subprocess.run([sys.executable, "producer.py"], cwd=HERE, env=env, timeout=120)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker_status = worker.wait(timeout=60)
    print(f"worker stopped (exit status {worker_status})")
    return producer.returncode or worker_status


if __name__ == "__main__":
    sys.exit(main())
