"""What `app.control` refuses before anything is sent."""

from __future__ import annotations

import pytest

from taskq.config import Settings
from taskq.control import Replies, WorkerPresence
from taskq.errors import ConfigurationError
from taskq.testing import memory_app


def test_a_command_of_your_own_cannot_take_a_builtin_name() -> None:
    app = memory_app()
    with pytest.raises(ValueError, match="'ping' is a built-in control command"):

        @app.control.command
        def ping(worker: object) -> str:
            return "mine"


async def test_bad_requests_are_refused_before_sending() -> None:
    app = memory_app()
    with pytest.raises(ValueError, match=r"unknown inspect command 'stat' \(did you mean 'stats'"):
        await app.control.inspect().ask("stat")
    with pytest.raises(ValueError, match="destination must name workers, not \\[\\]"):
        await app.control.ping(destination=[])
    with pytest.raises(ValueError, match="timeout must be positive seconds, not 0"):
        await app.control.broadcast("ping", timeout=0)
    with pytest.raises(ConfigurationError, match="bad rate_limit '10 per second'"):
        await app.control.rate_limit("tests.add", "10 per second")


async def test_no_worker_is_an_empty_reply_after_the_timeout() -> None:
    app = memory_app()
    async with app:
        replies = await app.control.ping(timeout=0.05)
        named = await app.control.ping(destination="w1@host", timeout=0.05)
    assert (replies.answers, replies.missing, replies.workers) == ({}, [], {})
    assert named.missing == ["w1@host"]


@pytest.mark.parametrize("interval", [0, -1, "2", True])
def test_the_heartbeat_interval_is_positive_seconds(interval: object) -> None:
    conf = Settings(worker_heartbeat_interval=interval)
    with pytest.raises(ConfigurationError, match="worker_heartbeat_interval must be a positive"):
        conf.validate()


def test_a_malformed_reply_is_ignored_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    replies = Replies()
    replies.add({"reply_to": "r", "worker": "w1", "result": "pong", "peers": {"w2": {}}})
    replies.add({"reply_to": "r", "result": "pong", "peers": {}})
    assert replies.answered == set()
    assert caplog.text.count("Ignored a malformed control reply") == 2
    peer = {"queues": ["q"], "active": 2, "last_heartbeat": 10.0, "online": True}
    replies.add({"reply_to": "r", "worker": "w1", "result": "pong", "peers": {"w1": peer}})
    assert replies.answers == {"w1": "pong"}
    assert replies.workers == {"w1": WorkerPresence(["q"], 2, 10.0, True)}
