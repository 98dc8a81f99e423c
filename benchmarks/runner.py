"""One run of one workload for one library, in that library's virtualenv.

    python -m benchmarks.runner --library celery --workload drain --n 10000 \\
        --log worker.log --output result.json

The suite sets the BENCH_* environment (see `benchmarks.adapters.base`) and reads the JSON
written to --output: {"library", "workload", "versions", "bulk_method", "figures" | "skipped"}.
Standard library only, apart from the adapter's own library.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from importlib import metadata
from pathlib import Path
from typing import Any

from benchmarks.adapters import LIBRARIES, Library
from benchmarks.adapters.base import NotAvailable
from benchmarks.workloads import WORKLOADS


def versions(library: Library) -> dict[str, str]:
    found = {}
    for package in library.packages:
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return found


async def run(library: Library, workload: str, n: int, log: Path) -> dict[str, Any]:
    outcome: dict[str, Any] = {"library": library.name, "workload": workload}
    outcome["versions"] = versions(library)
    adapter = library.load()()
    outcome["bulk_method"] = adapter.batch_method
    try:
        await adapter.open()
        try:
            outcome["figures"] = await WORKLOADS[workload].run_on(adapter, n, log)
        finally:
            await adapter.close()
    except NotAvailable as exc:
        outcome["skipped"] = str(exc)
    return outcome


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.runner")
    parser.add_argument("--library", required=True, choices=sorted(LIBRARIES))
    parser.add_argument("--workload", required=True, choices=sorted(WORKLOADS))
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--log", type=Path, required=True, help="the worker's output")
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args()
    outcome = asyncio.run(run(LIBRARIES[args.library], args.workload, args.n, args.log))
    args.output.write_text(json.dumps(outcome))


if __name__ == "__main__":
    main()
