"""The canvas API where it refuses bad input, and `replace` run eagerly (the worker cases run on
every broker in tests/integration/test_canvas_parity.py)."""

import inspect
from collections.abc import Sequence

import pytest

from taskq import chain, chord, group
from taskq.message import Message, encode
from taskq.testing import memory_app
from taskq.workflow import launch

app = memory_app("canvas")


@app.task
async def add(x: int, y: int) -> int:
    return x + y


@app.task(bind=True)
async def doubled(self, x: int) -> int:  # type: ignore[no-untyped-def]
    return self.replace(add.s(x, x))  # type: ignore[no-any-return]


def test_a_task_where_a_group_takes_signatures_is_a_type_error() -> None:
    with pytest.raises(
        TypeError, match=r"group\(\) takes signatures, not <Task test_canvas_api\.add>"
    ):
        group(add)
    with pytest.raises(TypeError, match=r"use test_canvas_api\.add\.s\(\.\.\.\)"):
        group(add.s(1, 1), add)  # type: ignore[arg-type]


def test_skew_refuses_a_step_or_stop_that_goes_nowhere() -> None:
    with pytest.raises(ValueError, match="step must be > 0"):
        group(add.s(1, 1)).skew(step=0)
    with pytest.raises(ValueError, match="stop >= start"):
        group(add.s(1, 1)).skew(start=5, stop=1)
    skewed = group(add.s(i, i) for i in range(4)).skew(start=1, stop=1.8, step=0.5)
    assert [task.options["countdown"] for task in skewed.tasks] == [1, 1.5, 1.5, 1.5]


def test_a_chord_header_with_links_of_its_own_is_refused() -> None:
    header = group(add.s(1, 1))
    header.link(add.s(1))
    with pytest.raises(ValueError, match="a chord's header has no links of its own"):
        chord(header, add.s(1))


def test_replace_outside_a_running_task_or_with_no_signature_is_refused() -> None:
    with pytest.raises(RuntimeError, match=r"replace\(\) is for the task while it runs"):
        doubled.replace(add.s(1, 1))
    with pytest.raises(TypeError, match="takes a signature"):
        doubled.replace(add)  # type: ignore[arg-type]


def test_task_signature_takes_call_options_and_parameters_is_the_functions() -> None:
    sig = add.signature((1, 2), countdown=3)
    assert (sig.args, sig.options) == ([1, 2], {"countdown": 3})
    with pytest.raises(TypeError, match="unknown signature option"):
        add.signature((1, 2), bogus=1)  # type: ignore[call-arg]
    assert add.parameters == inspect.signature(add.fn)


async def test_replace_run_eagerly_gives_the_replacements_result() -> None:
    async with app:
        result = await doubled.apply((21,))
        assert await result.get() == 42


async def test_what_a_long_chain_publishes_is_bounded_whatever_its_length() -> None:
    published: list[Message] = []

    async def capture(messages: Sequence[Message]) -> None:
        published.extend(messages)

    ones = [add.s(1) for _ in range(1000)]
    header = chord([add.s(1, 1), add.s(2, 2)], add.s(0))
    async with app:
        await launch(app, chain(add.s(0, 0), *ones).to_dict(), send=capture)
        await launch(app, chain(header, *ones).to_dict(), send=capture)
    first, *members = published
    assert len(first.chain) == 11  # ten links and the stored rest
    assert all(len(member.chord["kwargs"]["tasks"]) == 12 for member in members)  # type: ignore[index]
    assert max(len(encode(message)) for message in published) < 8_000
