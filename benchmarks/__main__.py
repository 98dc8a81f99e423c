"""`python -m benchmarks [--peers] [--quick] [--runs N] [--only NAME] [--skip NAME] [--n W=N]`

Without --peers: taskq's own suite. With --peers: the same workloads against Celery, arq,
SAQ, taskiq, streaq and Dramatiq too, each library, taskq included, in its own virtualenv
under benchmarks/.peers/, made on first use (without --peers taskq runs from this
interpreter). NAME is a workload, library or broker; --only and --skip repeat.

A full --peers run (no --quick, --only or --skip) also profiles a taskq worker with py-spy
and rewrites benchmarks/RESULTS.md; --results PATH writes the report of any run there. Every
run saves its record (run.json) next to the worker logs, and --render run.json writes the
report from one again without running anything.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from benchmarks import profile, record, report, servers, suite, venvs
from benchmarks.workloads import WORKLOADS

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
QUICK_CEILING_REQUESTS = 20_000


def _sizes(values: list[str]) -> dict[str, int]:
    sizes = {}
    for value in values:
        name, _, number = value.partition("=")
        if name not in WORKLOADS or not number.isdigit():
            raise SystemExit(f"--n wants WORKLOAD=N with a workload in {sorted(WORKLOADS)}")
        sizes[name] = int(number)
    return sizes


def parse(argv: list[str]) -> tuple[suite.Options, argparse.Namespace]:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--peers", action="store_true", help="run the peers too")
    parser.add_argument("--quick", action="store_true", help="small N, one run: a smoke run")
    parser.add_argument("--runs", type=int, help="runs per figure (default 3, quick 1)")
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        choices=sorted(suite.known_selectors()),
        help="keep cases of this workload, library or broker (repeatable)",
    )
    parser.add_argument(
        "--skip",
        action="append",
        default=[],
        choices=sorted(suite.known_selectors()),
        help="drop the cases that --only with these names would keep (repeatable)",
    )
    parser.add_argument("--n", action="append", default=[], help="WORKLOAD=N (repeatable)")
    parser.add_argument("--profile", action="store_true", help="profile a taskq worker")
    parser.add_argument("--results", type=Path, help=f"write the report here ({RESULTS.name})")
    parser.add_argument("--render", type=Path, help="no run: report a saved run.json again")
    args = parser.parse_args(argv)
    runs = args.runs or (1 if args.quick else 3)
    options = suite.Options(
        args.peers, args.quick, runs, tuple(args.only), tuple(args.skip), _sizes(args.n)
    )
    return options, args


def run_suite(options: suite.Options, argv: list[str], profiled: bool) -> record.Record:
    """Start the servers, run the suite (and the profile), and keep it all in a record."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    logs = venvs.WORK / "runs" / stamp
    logs.mkdir(parents=True, exist_ok=True)
    command = " ".join(["python -m benchmarks", *argv])
    run = record.Record(command, options.runs, record.machine(), [])
    with (
        tempfile.TemporaryDirectory(prefix="taskq-bench-") as scratch,
        servers.running(Path(scratch), amqp=suite.needs_rabbitmq(options)) as srv,
    ):
        requests = QUICK_CEILING_REQUESTS if options.quick else servers.CEILING_REQUESTS
        run.ceiling = servers.redis_ceiling(srv.redis_port, requests)
        run.ping_ms = servers.redis_ping_ms(srv.redis_port)
        run.outcomes = suite.run(options, logs, srv)
        hot_spots = profile.run(options, logs, srv) if profiled else None
    run.profile = hot_spots.lines() if hot_spots else []
    run.save(logs / "run.json")
    print(f"[bench] worker logs and the raw record: {logs}", file=sys.stderr)
    return run


def main(argv: list[str]) -> None:
    options, args = parse(argv)
    partial = options.quick or options.only or options.skip
    if args.render:
        run = record.Record.load(args.render)
    else:
        run = run_suite(options, argv, args.profile or (options.peers and not partial))
    print(report.full_table(run.outcomes))
    if run.ping_ms:
        print(record.ping_line(run.ping_ms))
    whole = args.render or (options.peers and not partial)  # RESULTS.md compares with peers
    target = args.results or (RESULTS if whole else None)
    if target is not None:
        target.write_text(record.document(run))
        print(f"[bench] wrote {target}", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1:])
