"""`python -m chaos [--only SCENARIO ...] [--short]`: the reliability scenarios.

Each scenario starts its own servers and `taskq worker`/`taskq beat` processes, prints its
table of figures when it ends, and stops everything it started. The exit status is 1 when
any scenario failed a check (a task lost, a wrong final state, more duplicates than the
bound, a worker that died by itself, ...), 0 otherwise. A server that is not installed skips
the scenarios that need it, except with CI=true (or 1), where it fails them.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import shutil
import sys
import tempfile
import time
import traceback
from contextlib import AsyncExitStack
from pathlib import Path

import anyio

from chaos import servers
from chaos.context import Context
from chaos.report import FAIL, Figure, Outcome, summary, table
from chaos.scenarios import Scenario, selected, selectors


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m chaos",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        choices=sorted(selectors()),
        help="run this scenario or family only (repeatable)",
    )
    parser.add_argument("--short", action="store_true", help="a reduced run: a few minutes")
    parser.add_argument("--seed", type=int, help="seed of the kill timings and the garbage")
    return parser.parse_args(argv)


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"true", "1"}


async def run_one(
    scenario: Scenario, args: argparse.Namespace, run_dir: Path, rabbitmq: servers.SharedRabbitMQ
) -> Outcome:
    started = time.monotonic()
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    try:
        async with AsyncExitStack() as stack:
            directory = run_dir / scenario.name
            directory.mkdir()
            ctx = Context(
                scenario.name, args.short, directory, rabbitmq, stack, random.Random(seed)
            )
            ctx.log(f"starting (seed {seed})")
            outcome = await scenario.run(ctx)
    except servers.not_installed_error() as exc:
        outcome = Outcome(scenario.name, "")
        if in_ci():
            outcome.figures.append(Figure("servers installed", f"no: {exc}", "yes", False))
        else:
            outcome.skipped = f"{exc}; install it with `make services`"
    except Exception:  # a scenario that breaks fails, with its traceback
        outcome = Outcome(scenario.name, "the scenario raised")
        outcome.figures.append(Figure("scenario ran to its end", "no", "yes", False))
        outcome.notes.append(f"```\n{traceback.format_exc()}```")
    outcome.seconds = time.monotonic() - started
    return outcome


async def run_all(args: argparse.Namespace, run_dir: Path) -> list[Outcome]:
    rabbitmq = servers.SharedRabbitMQ(run_dir / "shared-rabbitmq")
    outcomes = []
    try:
        for scenario in selected(args.only):
            outcome = await run_one(scenario, args, run_dir, rabbitmq)
            print(table(outcome), flush=True)
            outcomes.append(outcome)
    finally:
        rabbitmq.stop()
    return outcomes


def main(argv: list[str]) -> int:
    args = parse(argv)
    run_dir = Path(tempfile.mkdtemp(prefix="taskq-chaos-"))
    # The harness's own clients (taskq, redis-py, aio-pika) log outages here, not on the terminal.
    logging.basicConfig(filename=run_dir / "harness.log", level=logging.INFO)
    outcomes = anyio.run(run_all, args, run_dir)
    print(summary(outcomes), flush=True)
    failed = any(outcome.result == FAIL for outcome in outcomes)
    if failed:
        print(f"[chaos] logs and data kept in {run_dir}", file=sys.stderr)
    else:
        shutil.rmtree(run_dir, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
