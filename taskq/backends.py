"""Building an app's backends from its settings: the broker, the result store, and how chords
are counted (by the broker itself when it can count the store's chords atomically, else by the
store: see `taskq.chords`). Each backend reads its own options from the settings."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module
from urllib.parse import urlsplit

from taskq.brokers.base import Broker, create_broker
from taskq.chords import ChordCounter
from taskq.config import Settings
from taskq.stores.base import ResultStore, create_store

# Brokers that can count the chords of a store of theirs: scheme -> "module:function".
_ATOMIC_CHORDS = {
    "redis": "taskq.brokers.redis_chords:atomic_chords",
    "rediss": "taskq.brokers.redis_chords:atomic_chords",
}


@dataclass(frozen=True, slots=True)
class Backends:
    broker: Broker
    store: ResultStore
    chords: ChordCounter | None  # None: the store counts chords

    @classmethod
    def build(cls, broker_url: str, store_url: str, conf: Settings) -> Backends:
        """The backends, not connected yet."""
        broker, store = create_broker(broker_url, conf), create_store(store_url, conf)
        return cls(broker, store, _chord_counter(broker_url, broker, store))

    async def connect(self) -> None:
        await self.broker.connect()
        try:
            await self.store.connect()
        except BaseException:
            await self.broker.close()
            raise

    async def close(self) -> None:
        await self.broker.close()
        await self.store.close()


def _chord_counter(url: str, broker: Broker, store: ResultStore) -> ChordCounter | None:
    found = _ATOMIC_CHORDS.get(urlsplit(url).scheme)
    # The broker's script writes the callback's envelope, results spliced in: unsigned.
    if found is None or broker.options.signing is not None:
        return None
    module, function = found.split(":")
    counter: ChordCounter | None = getattr(import_module(module), function)(broker, store)
    return counter
