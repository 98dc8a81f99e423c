"""Where each garbage input ended: run (the task recorded its mark), or in the dead-letter
queue (a letter's body carries its mark; an anonymous input may be a letter with no mark)."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from chaos.garbage.inputs import Input
from taskq.brokers.base import DeadLetter

MARK = re.compile(rb"garbage[0-9a-f]+n\d{5}")


@dataclass
class Accounting:
    ran: int = 0
    dead_lettered: int = 0
    ran_more_than_once: int = 0
    unaccounted: list[Input] = field(default_factory=list)


def account(
    inputs: Sequence[Input], ran: Counter[str], letters: Sequence[DeadLetter]
) -> Accounting:
    bodies = [body_bytes(letter.body) for letter in letters]
    lettered = {mark.decode() for body in bodies for mark in MARK.findall(body)}
    markless = sum(1 for body in bodies if not MARK.search(body))
    found = Accounting()
    for one in inputs:
        runs = max(ran[one.mark], ran[one.task_id] if one.task_id else 0)
        if runs:
            found.ran += 1
            found.ran_more_than_once += runs > 1
        elif one.mark in lettered:
            found.dead_lettered += 1
        elif one.anonymous and markless:
            markless -= 1
            found.dead_lettered += 1
        else:
            found.unaccounted.append(one)
    return found


def body_bytes(body: object) -> bytes:
    """A dead letter's body: bytes, unless garbage made it a number or a text."""
    return body if isinstance(body, bytes) else str(body).encode()


def reasons(letters: Sequence[DeadLetter], width: int = 90) -> Counter[str]:
    """The dead letters' reasons, each cut to its first line and `width` characters."""
    return Counter(letter.reason.splitlines()[0][:width] for letter in letters if letter.reason)
