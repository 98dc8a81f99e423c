"""The scenarios, by name. A family (the name up to its first dash: `killstorm`,
`garbage`, ...) selects all of its scenarios with `--only`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from chaos.context import Context
from chaos.report import Outcome
from chaos.scenarios import beat, chords, garbage, killstorm, restarts, visibility


@dataclass(frozen=True)
class Scenario:
    name: str
    run: Callable[[Context], Awaitable[Outcome]]

    @property
    def family(self) -> str:
        return self.name.split("-", 1)[0]


SCENARIOS = [
    Scenario("killstorm-sqlite", killstorm.on_sqlite_broker),
    Scenario("killstorm-redis", killstorm.on_redis_broker),
    Scenario("killstorm-amqp", killstorm.on_classic_queue),
    Scenario("killstorm-quorum", killstorm.on_quorum_queue),
    Scenario("restart-redis-sigterm", restarts.redis_sigterm),
    Scenario("restart-redis-sigkill", restarts.redis_sigkill),
    Scenario("restart-amqp", restarts.rabbitmq_restart),
    Scenario("visibility-sqlite", visibility.on_sqlite_broker),
    Scenario("visibility-redis", visibility.on_redis_broker),
    Scenario("beat-sqlite", beat.on_sqlite_store),
    Scenario("beat-redis", beat.on_redis_store),
    Scenario("chord-sqlite", chords.on_sqlite_broker),
    Scenario("chord-redis", chords.on_redis_broker),
    Scenario("garbage-envelopes-sqlite", garbage.envelopes_on_sqlite),
    Scenario("garbage-envelopes-redis", garbage.envelopes_on_redis),
    Scenario("garbage-envelopes-amqp", garbage.envelopes_on_rabbitmq),
    Scenario("garbage-redis-keys", garbage.redis_keys),
    Scenario("garbage-sqlite-rows", garbage.sqlite_rows),
]


def selectors() -> set[str]:
    return {scenario.name for scenario in SCENARIOS} | {scenario.family for scenario in SCENARIOS}


def selected(only: list[str]) -> list[Scenario]:
    """The scenarios named by `only` (names or families), in the suite's order; all if none."""
    wanted = set(only)
    return [s for s in SCENARIOS if not wanted or s.name in wanted or s.family in wanted]
