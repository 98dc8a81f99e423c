"""The suite: which (workload, library, broker) cases run, in rounds, each in its own venv.

Every case runs once per round, the rounds one after the other, so that a slow spell on a
shared machine touches every library alike. A run is `python -m benchmarks.runner` in the
library's virtualenv (`benchmarks.venvs`; taskq's own beside the peers, else this one)
against the same throwaway servers; Redis is flushed before each run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import servers, venvs
from benchmarks.adapters import LIBRARIES, TASKQ, Library, taskq_broker_missing
from benchmarks.adapters.base import BROKER_URL, REDIS_PID, RESULT_URL
from benchmarks.probe import URL_VARIABLE as PROBE_URL
from benchmarks.workloads import WORKLOADS, Workload

COMPARED_ON = ("redis", "amqp")  # the brokers on which taskq meets the peers
BROKER_WORKLOADS = ("drain", "round_trip")  # taskq's own on every broker it has
BROKER_ORDER = ("redis", "amqp", "sqlite", "memory")
RUN_TIMEOUT = 1800


@dataclass(frozen=True)
class Case:
    workload: Workload
    library: Library
    broker: str

    @property
    def label(self) -> str:
        return f"{self.workload.name}-{self.library.name}-{self.broker}"

    def matches(self, selectors: Sequence[str]) -> bool:
        """--only: a case matches when every kind of name given (workload, library, broker)
        includes its own."""
        mine = {"workload": self.workload.name, "library": self.library.name}
        mine["broker"] = self.broker
        for kind, name in mine.items():
            wanted = {s for s in selectors if s in _NAMES[kind]}
            if wanted and name not in wanted:
                return False
        return True


_NAMES = {
    "workload": set(WORKLOADS),
    "library": set(LIBRARIES),
    "broker": set(BROKER_ORDER),
}


def known_selectors() -> set[str]:
    return set().union(*_NAMES.values())


@dataclass
class Outcome:
    """Every run of one case."""

    case: Case
    n: int
    runs: list[dict[str, float]] = field(default_factory=list)
    skipped: str | None = None
    versions: dict[str, str] = field(default_factory=dict)
    bulk_method: str = ""  # how the library publishes in bulk (its adapter's batch_method)

    def as_json(self) -> dict[str, Any]:
        return {
            "case": self.case.label,
            "n": self.n,
            "runs": self.runs,
            "skipped": self.skipped,
            "versions": self.versions,
            "bulk_method": self.bulk_method,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Outcome:
        workload, library, broker = data["case"].rsplit("-", 2)
        case = Case(WORKLOADS[workload], LIBRARIES[library], broker)
        fields = ("runs", "skipped", "versions", "bulk_method")
        return cls(case, data["n"], **{name: data[name] for name in fields if name in data})


@dataclass(frozen=True)
class Options:
    peers: bool
    quick: bool
    runs: int
    only: tuple[str, ...] = ()
    skip: tuple[str, ...] = ()
    sizes: dict[str, int] = field(default_factory=dict)

    def selected(self, case: Case) -> bool:
        """Kept by --only and not dropped by --skip."""
        return case.matches(self.only) and not (self.skip and case.matches(self.skip))

    def n(self, workload: Workload) -> int:
        default = workload.quick_n if self.quick else workload.default_n
        return self.sizes.get(workload.name, default)


def plan(options: Options) -> list[Case]:
    libraries = [TASKQ, *([lib for lib in LIBRARIES.values() if lib.peer] if options.peers else [])]
    cases = []
    for workload in WORKLOADS.values():
        for broker in BROKER_ORDER:
            for library in libraries:
                own = library is TASKQ and workload.name in BROKER_WORKLOADS
                if broker in library.brokers and (own or broker in COMPARED_ON):
                    cases.append(Case(workload, library, broker))
    return [case for case in cases if options.selected(case)]


SETTING_PREFIX = "BENCH_SETTING_"


def interpreter(library: Library, options: Options) -> Path:
    """A peer's virtualenv; taskq's own beside the peers (each library alone in its venv),
    else this interpreter (taskq's own suite, `make bench` and the tests)."""
    if library.peer or options.peers:
        return venvs.ensure(library.name)
    return Path(sys.executable)


def _environment(case: Case, srv: servers.Servers, scratch: Path) -> dict[str, str]:
    """The runner's (and its worker's) environment: URLs, and this checkout importable."""
    urls = {
        "memory": "memory://bench",
        "sqlite": f"sqlite:///{scratch / 'bench.db'}",
        "redis": srv.redis_url,
        "amqp": srv.amqp_url or "",
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TASKQ_", "BENCH_"))}
    # BENCH_SETTING_<NAME>=value sets TASKQ_<NAME> for the run (its worker's settings): a
    # figure with a feature on, such as BENCH_SETTING_WORKER_SEND_TASK_EVENTS=true.
    env.update(
        {
            "TASKQ_" + k.removeprefix(SETTING_PREFIX): v
            for k, v in os.environ.items()
            if k.startswith(SETTING_PREFIX)
        }
    )
    env.update({PROBE_URL: srv.redis_url, RESULT_URL: srv.redis_url, REDIS_PID: str(srv.redis_pid)})
    env.update({BROKER_URL: urls[case.broker], "PYTHONPATH": str(servers.ROOT)})
    return env


def run_once(
    outcome: Outcome,
    srv: servers.Servers,
    logs: Path,
    python: Path,
    extra_env: dict[str, str] | None = None,
) -> None:
    """One run of `outcome.case` in its own interpreter; records figures, a skip or a failure."""
    case, attempt = outcome.case, len(outcome.runs) + 1
    log = logs / f"{case.label}-{attempt}.log"
    srv.reset()
    with tempfile.TemporaryDirectory(prefix=f"{case.label}-") as scratch:
        output = Path(scratch) / "result.json"
        argv = [str(python), "-m", "benchmarks.runner", "--library", case.library.name]
        argv += ["--workload", case.workload.name, "--n", str(outcome.n)]
        argv += ["--log", str(log), "--output", str(output)]
        env = {**_environment(case, srv, Path(scratch)), **(extra_env or {})}
        status = _run_logged(argv, env, log)
        result: dict[str, Any] = json.loads(output.read_text()) if output.exists() else {}
    outcome.versions = result.get("versions", outcome.versions)
    outcome.bulk_method = result.get("bulk_method", outcome.bulk_method)
    if "figures" in result:
        outcome.runs.append(result["figures"])
    elif "skipped" in result:
        outcome.skipped = f"not available: {result['skipped']}"
    else:
        outcome.skipped = f"failed ({status}, see {log})"


def _run_logged(argv: list[str], env: dict[str, str], log: Path) -> str:
    """Run the runner with its output in `log`; how it ended, for a failure's message."""
    with log.open("ab") as output:
        try:
            done = subprocess.run(
                argv,
                env=env,
                cwd=servers.ROOT,
                stdout=output,
                stderr=subprocess.STDOUT,
                timeout=RUN_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return f"still running after {RUN_TIMEOUT} s"
    return f"exit status {done.returncode}"


def _progress(outcome: Outcome, round_number: int) -> str:
    where = f"[bench] round {round_number} {outcome.case.label} (n={outcome.n:,})"
    if outcome.skipped:
        return f"{where}: {outcome.skipped}"
    figures = outcome.runs[-1]
    shown = ", ".join(f"{name} {value:,.2f}" for name, value in figures.items())
    return f"{where}: {shown}"


def unavailable(case: Case) -> str | None:
    """Known before running: taskq on a broker whose module is not there yet."""
    missing = taskq_broker_missing(case.broker) if case.library is TASKQ else None
    return f"not available: {missing}" if missing else None


def run(options: Options, logs: Path, srv: servers.Servers) -> list[Outcome]:
    outcomes = [Outcome(case, options.n(case.workload)) for case in plan(options)]
    for outcome in outcomes:
        outcome.skipped = unavailable(outcome.case)
    for round_number in range(1, options.runs + 1):
        for outcome in outcomes:
            if outcome.skipped is None:
                run_once(outcome, srv, logs, interpreter(outcome.case.library, options))
                print(_progress(outcome, round_number), file=sys.stderr, flush=True)
    return outcomes


def needs_rabbitmq(options: Options) -> bool:
    return any(case.broker == "amqp" and not unavailable(case) for case in plan(options))
