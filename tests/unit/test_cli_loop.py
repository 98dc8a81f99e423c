"""`taskq worker --loop`: which event loop each choice gets."""

import importlib.util

import pytest

from taskq.cli import CommandError, event_loop_options


def test_auto_takes_uvloop_only_when_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    assert event_loop_options("auto") == {"use_uvloop": True}  # the dev install has it
    assert event_loop_options("asyncio") == {"use_uvloop": False}
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    assert event_loop_options("auto") == {"use_uvloop": False}
    with pytest.raises(CommandError, match=r"pip install 'taskq\[uvloop\]'"):
        event_loop_options("uvloop")


def test_an_unknown_loop_is_a_clear_error() -> None:
    with pytest.raises(CommandError, match="--loop must be one of auto, asyncio, uvloop"):
        event_loop_options("trio")
