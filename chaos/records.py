"""What the tasks recorded about themselves (see `chaos.tasks.record`): one file per worker
process under a scenario's records directory, read as the files grow."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

Moments = defaultdict[str, list[float]]  # key -> when (epoch seconds, the machine's clock)


@dataclass
class Records:
    """Every record in `directory` so far; `refresh()` reads what was appended since."""

    directory: Path
    moments: defaultdict[str, Moments] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(list))
    )
    _offsets: dict[Path, int] = field(default_factory=dict)

    def refresh(self) -> None:
        for path in sorted(self.directory.glob("*.log")):
            for line in self._new_lines(path):
                event, rest = line.split(" ", 1)
                key, at = rest.rsplit(" ", 1)
                self.moments[event][key].append(float(at))

    def counts(self, event: str) -> Counter[str]:
        return Counter({key: len(times) for key, times in self.moments[event].items()})

    def count(self, event: str, key: str) -> int:
        return len(self.moments[event].get(key, ()))

    def distinct(self, event: str) -> int:
        return len(self.moments[event])

    def duplicates(self, event: str, keys: set[str]) -> int:
        """How many `event`s of `keys` were more than one per key."""
        return sum(len(times) - 1 for key, times in self.moments[event].items() if key in keys)

    def next_task_done(self, moment: float) -> float | None:
        """When the first task that started after `moment` ended, if one did."""
        ends = self.moments["end"]
        done = [
            end
            for key, starts in self.moments["start"].items()
            if max(starts) > moment
            for end in ends.get(key, ())
            if end > moment
        ]
        return min(done, default=None)

    def _new_lines(self, path: Path) -> list[str]:
        offset = self._offsets.get(path, 0)
        with path.open("rb") as file:
            file.seek(offset)
            chunk = file.read()
        complete = chunk[: chunk.rfind(b"\n") + 1]  # a line being written waits for the next read
        self._offsets[path] = offset + len(complete)
        return complete.decode(errors="replace").splitlines()
