"""Excerpts of the workers' logs for a failed check's notes."""

from __future__ import annotations

TRACEBACK = "Traceback (most recent call last):"


def tracebacks(text: str, limit: int = 2, lines: int = 16) -> list[str]:
    """The first `limit` distinct tracebacks, each with the log line it belongs to."""
    found: list[str] = []
    log = text.splitlines()
    for at, line in enumerate(log):
        if line.startswith(TRACEBACK):
            start = max(at - 1, 0)
            end = next((i for i in range(at + 1, len(log)) if log[i].startswith("[")), len(log))
            excerpt = "\n".join(log[start : min(end, at + lines)])
            if excerpt.split("\n", 1)[-1] not in (seen.split("\n", 1)[-1] for seen in found):
                found.append(excerpt)
        if len(found) >= limit:
            break
    return found
