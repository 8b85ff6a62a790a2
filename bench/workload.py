"""The events a benchmark sends: a pool of real synergy events from the simulator, encoded once, each send under a
fresh correlation id (so the worker decides every one instead of skipping duplicates)."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass

from worker.events import encode_event
from worker.feed import simulated_events

DEFAULT_POOL_SIZE = 512


@dataclass(frozen=True)
class Workload:
    templates: tuple[Mapping[bytes, bytes], ...]  # encoded stream fields of valid events

    @classmethod
    def simulated(cls, size: int = DEFAULT_POOL_SIZE, seed: int = 0) -> Workload:
        """`size` synergy events detected in a seeded simulated market: the mix of types, directions and matrices
        the agents were trained on, so decisions execute and hold as they would live."""
        if size < 1:
            raise ValueError(f"the workload needs at least one event, got size={size}")
        events = itertools.islice(simulated_events(seed, n_bars=20_000), size)
        templates = tuple(
            {_bytes(key): _bytes(value) for key, value in encode_event(event).items()} for event in events
        )
        return cls(templates)

    def fields(self, index: int, correlation_id: str) -> dict[bytes, bytes]:
        """The stream fields of send number `index`, under `correlation_id`."""
        fields = dict(self.templates[index % len(self.templates)])
        fields[b"correlation_id"] = correlation_id.encode()
        return fields


def _bytes(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode()
