"""Dead-letter queues: list them, replay letters as fresh messages, delete them."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from taskq.brokers.base import DeadLetter
from taskq.errors import MessageError
from taskq.message import decode, peek_id
from taskq.serializers import SERIALIZERS

if TYPE_CHECKING:
    from taskq.app import TaskQ

PAGE = 1000


async def dead_letters(app: TaskQ, queue: str, wanted: str | None = None) -> list[DeadLetter]:
    """Every dead letter of `queue`, oldest first; or only those `wanted` names: the letter
    itself by its letter_id (the broker's id of the entry), or a task's letters by its id."""
    broker = await app.connected_broker()
    letters = await broker.dead_letters(
        queue, limit=max(PAGE, await broker.dead_letter_length(queue))
    )
    return [
        letter
        for letter in letters
        if wanted is None or wanted in (letter.id, peek_id(letter.body))
    ]


async def replay(app: TaskQ, queue: str, wanted: str | None = None) -> tuple[int, list[str]]:
    """Publish the dead letters of `queue` (those `wanted` names, see `dead_letters`) again
    with their retries reset, and remove them.

    Returns how many were replayed and, for each letter left in place, why: a letter
    whose body is not a message, or (with `message_signing_key`) whose signature does not
    verify, cannot be replayed.
    """
    broker = await app.connected_broker()
    signing = broker.options.signing
    replayed, problems = 0, []
    for letter in await dead_letters(app, queue, wanted):
        try:  # a forged letter must not come back signed by the replay
            body = letter.body if signing is None else signing.verified(letter.body)
            message = decode(body, frozenset(SERIALIZERS), app.conf.task_max_message_bytes)
        except MessageError as exc:
            problems.append(f"dead letter with letter_id {letter.id}: {exc}")
            continue
        await broker.publish(dataclasses.replace(message, retries=0, eta=None), message.queue)
        replayed += await broker.remove_dead_letters(queue, [letter.id])
    return replayed, problems


async def delete(app: TaskQ, queue: str, wanted: str | None = None) -> int:
    """Remove the dead letters of `queue` (those `wanted` names, see `dead_letters`) for
    good; returns how many."""
    broker = await app.connected_broker()
    if wanted is None:
        return await broker.purge_dead_letters(queue)
    letters = await dead_letters(app, queue, wanted)
    return await broker.remove_dead_letters(queue, [letter.id for letter in letters])
