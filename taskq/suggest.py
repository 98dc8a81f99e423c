"""'Did you mean ...?': the known name within a small edit distance of a misspelt one."""

from __future__ import annotations

from collections.abc import Iterable


def closest(name: str, known: Iterable[str]) -> str | None:
    """The known name nearest to `name`, if it is a typo away: at most one edit per four
    characters (two for long names, three at most), counting a swap of neighbours as one."""
    limit = min(3, max(1, len(name) // 4))
    best: tuple[int, str] | None = None
    for candidate in known:
        if abs(len(candidate) - len(name)) > limit:
            continue
        distance = edit_distance(name, candidate)
        if distance <= limit and (best is None or distance < best[0]):
            best = (distance, candidate)
    return best[1] if best else None


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """' (did you mean 'x'?)', or '' when nothing known is close."""
    match = closest(name, known)
    return f" (did you mean {match!r}?)" if match else ""


def edit_distance(a: str, b: str) -> int:
    """Optimal string alignment distance: inserts, deletes, substitutions, adjacent swaps."""
    previous2: list[int] = []
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, 1):
        current = [i] + [0] * len(b)
        for j, char_b in enumerate(b, 1):
            cost = 0 if char_a == char_b else 1
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + cost)
            if i > 1 and j > 1 and char_a == b[j - 2] and a[i - 2] == char_b:
                current[j] = min(current[j], previous2[j - 2] + 1)
        previous2, previous = previous, current
    return previous[len(b)]
