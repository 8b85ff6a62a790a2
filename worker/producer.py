"""Publishing SYNERGY_DETECTED events: what `tacticalctl emit|simulate|replay`, tests and benchmarks use.

`maxlen` trims the stream approximately (`MAXLEN ~`). Redis trims the oldest entries whether or not
they were delivered or acknowledged, so an unread or still-pending event can be dropped and never
decided. Trimming is therefore off by default; turn it on only with a bound far above any backlog.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from itertools import islice

import numpy as np
import redis

from models.features import build_features, feature_window
from models.simulator import BAR_SECONDS, SimulatorConfig, simulate_bars
from worker.events import DEFAULT_MATRIX_ENCODING, encode_event, new_correlation_id, validate_event
from worker.names import INPUT_STREAM
from worker.records import MATRIX_ROWS, SynergyEvent, SynergyType

_SIMULATED_BARS = MATRIX_ROWS + 40  # history before the window, so open gaps and the volume EMA carry in


def publish_event(
    client: redis.Redis,
    event: SynergyEvent,
    *,
    stream: str = INPUT_STREAM,
    maxlen: int | None = None,
    matrix_encoding: str = DEFAULT_MATRIX_ENCODING,
) -> bytes:
    """XADD one event; returns its entry id. Raises `InvalidEvent` before sending an invalid event."""
    fields = encode_event(event, matrix_encoding=matrix_encoding)
    return _entry_id(client.xadd(stream, fields, maxlen=maxlen, approximate=True))  # type: ignore[arg-type]


def publish_events(
    client: redis.Redis,
    events: Iterable[SynergyEvent],
    *,
    stream: str = INPUT_STREAM,
    batch: int = 500,
    maxlen: int | None = None,
    matrix_encoding: str = DEFAULT_MATRIX_ENCODING,
) -> list[bytes]:
    """XADD events in pipelined batches, in order; returns their entry ids.

    Each batch is encoded before it is sent: an invalid event raises `InvalidEvent` and nothing of its
    batch is published, while earlier batches stay published.
    """
    if batch < 1:
        raise ValueError(f"batch must be at least 1, got {batch}")
    entry_ids: list[bytes] = []
    for chunk in _chunks(events, batch):
        encoded = [encode_event(event, matrix_encoding=matrix_encoding) for event in chunk]
        pipeline = client.pipeline(transaction=False)
        for fields in encoded:
            pipeline.xadd(stream, fields, maxlen=maxlen, approximate=True)  # type: ignore[arg-type]
        entry_ids.extend(_entry_id(entry_id) for entry_id in pipeline.execute())
    return entry_ids


def make_event(
    matrix: np.ndarray | None = None,
    *,
    correlation_id: str | None = None,
    synergy_type: SynergyType = SynergyType.TYPE_1,
    direction: int = 1,
    confidence: float = 0.8,
    symbol: str = "ES",
    price: float = 4500.0,
    atr: float = 5.0,
    timestamp: str | None = None,
    rng: np.random.Generator | None = None,
) -> SynergyEvent:
    """A valid event (`InvalidEvent` if the arguments make it invalid).

    Defaults: a fresh correlation id, the close of the last completed 5-minute bar, and a feature
    matrix from `simulated_feature_matrix(rng)` (pass a seeded generator for repeatable matrices; without
    one, each call draws a fresh market).
    """
    if matrix is None:
        matrix = simulated_feature_matrix(rng if rng is not None else np.random.default_rng())
    frozen = np.array(matrix, dtype=np.float32)
    frozen.flags.writeable = False
    event = SynergyEvent(
        correlation_id=correlation_id if correlation_id is not None else new_correlation_id(),
        synergy_type=synergy_type,
        direction=direction,
        confidence=confidence,
        symbol=symbol,
        timestamp=timestamp if timestamp is not None else last_bar_close(),
        price=price,
        atr=atr,
        matrix=frozen,
    )
    validate_event(event)
    return event


def last_bar_close(now: datetime | None = None) -> str:
    """The close of the last completed 5-minute bar, as ISO-8601 UTC (`2024-05-01T14:35:00Z`).

    A naive `now` is taken as UTC."""
    moment = datetime.now(UTC) if now is None else now if now.tzinfo else now.replace(tzinfo=UTC)
    seconds = int(moment.timestamp()) // BAR_SECONDS * BAR_SECONDS
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def simulated_feature_matrix(rng: np.random.Generator) -> np.ndarray:
    """The last 60 feature rows of a short simulated market: the project's simulator and feature builder,
    so the matrix has the statistics the agents were trained on."""
    config = SimulatorConfig(seed=int(rng.integers(2**63)), n_bars=_SIMULATED_BARS)
    return feature_window(build_features(simulate_bars(config)), _SIMULATED_BARS - 1)


def _chunks(events: Iterable[SynergyEvent], size: int) -> Iterator[list[SynergyEvent]]:
    iterator = iter(events)
    while chunk := list(islice(iterator, size)):
        yield chunk


def _entry_id(entry_id: bytes | str) -> bytes:
    return entry_id if isinstance(entry_id, bytes) else entry_id.encode()


__all__ = [
    "last_bar_close",
    "make_event",
    "publish_event",
    "publish_events",
    "simulated_feature_matrix",
]
