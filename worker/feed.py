"""The upstream stand-in's feed: synergy events from the simulator or replayed bars, sent at a chosen rate."""

from __future__ import annotations

import itertools
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import redis

from models.bars import read_bars_csv
from models.simulator import SimulatorConfig, simulate_bars
from models.synergy import synergy_events
from worker.connection import REDIS_REFUSING_WRITES, REDIS_UNREACHABLE
from worker.events import encode_event
from worker.names import INPUT_STREAM
from worker.records import SynergyEvent


def run_id() -> str:
    """A short prefix that keeps correlation ids of one live feed apart from every other run's."""
    return secrets.token_hex(4)


def simulated_events(seed: int = 0, *, n_bars: int = 20_000, symbol: str = "SIM", id_prefix: str = "",
                     endless: bool = True) -> Iterator[SynergyEvent]:
    """Synergy events from simulated markets: seed, then seed+1, … (each with its own ids) while `endless`."""
    seeds = itertools.count(seed) if endless else iter([seed])
    for current in seeds:
        bars = simulate_bars(SimulatorConfig(seed=current, n_bars=n_bars, symbol=symbol))
        yield from synergy_events(bars, id_prefix=f"{id_prefix}s{current}-" if id_prefix or endless else "")


def replay_events(path: Path, *, symbol: str | None = None, id_prefix: str = "") -> Iterator[SynergyEvent]:
    """Synergy events detected in a CSV of 5-minute OHLCV bars. Ids are deterministic: replaying the same file
    twice yields the same ids, which the worker treats as duplicates (give an `id_prefix` to decide them again)."""
    yield from synergy_events(read_bars_csv(path, symbol=symbol), id_prefix=id_prefix)


@dataclass(frozen=True)
class FeedStats:
    sent: int
    elapsed_s: float

    @property
    def rate(self) -> float:
        return self.sent / self.elapsed_s if self.elapsed_s > 0 else 0.0


class FeedOutage(Exception):
    """Redis went away mid-feed, or took no writes (a failover left the address on a replica, memory full). `stats`
    counts the events known sent; of the batch in flight (`unsent`), any number may have landed. A feed that goes on
    sends that batch again first (`ResumableFeed.put_back`): nothing is lost, and an event that had landed comes back
    as a duplicate, which the worker acks without a second decision (the same correlation id)."""

    def __init__(self, stats: FeedStats, unsent: Sequence[SynergyEvent], cause: Exception) -> None:
        what = "unreachable" if isinstance(cause, REDIS_UNREACHABLE) else "refusing writes"
        super().__init__(f"Redis {what} after {stats.sent} events sent ({len(unsent)} more in flight, their fate "
                         f"unknown): {cause}")
        self.stats = stats
        self.unsent = tuple(unsent)
        self.cause = cause

    @property
    def in_flight(self) -> int:
        return len(self.unsent)


class ResumableFeed(Iterator[SynergyEvent]):
    """A feed's events, into which the batch in flight at an outage is put back, in front and in order, to be sent
    again (`put_back`); as many outages as come, without nesting iterators."""

    def __init__(self, events: Iterable[SynergyEvent]) -> None:
        self._source = iter(events)
        self._front: deque[SynergyEvent] = deque()

    def put_back(self, batch: Sequence[SynergyEvent]) -> None:
        self._front.extendleft(reversed(batch))

    def __next__(self) -> SynergyEvent:
        return self._front.popleft() if self._front else next(self._source)


def send_events(
    client: redis.Redis,
    events: Iterable[SynergyEvent],
    *,
    rate: float | None = None,
    duration_s: float | None = None,
    limit: int | None = None,
    stop: threading.Event | None = None,
    stream: str = INPUT_STREAM,
    on_sent: Callable[[int], None] | None = None,
) -> FeedStats:
    """XADD events, paced at `rate` per second (None: as fast as pipelining allows), until the events, `limit`,
    `duration_s` or `stop` run out. Pacing is by schedule, not by sleeping a fixed gap, so the rate holds.

    Raises FeedOutage when Redis becomes unreachable or refuses writes; `events` then resumes after the batch that
    was in flight (a `ResumableFeed` takes it back, to send it again)."""
    started = time.perf_counter()
    sent = 0
    source = iter(events)
    exhausted = False
    while not exhausted:
        elapsed = time.perf_counter() - started
        if (stop is not None and stop.is_set()) or (duration_s is not None and elapsed >= duration_s):
            break
        remaining = limit - sent if limit is not None else 500
        if remaining <= 0:
            break
        allowed = int(elapsed * rate) + 1 - sent if rate is not None else 500
        due = min(remaining, allowed, 500)
        if due <= 0:
            assert rate is not None
            time.sleep(min(0.005, (sent + 1) / rate - elapsed))
            continue
        pipe = client.pipeline(transaction=False)
        batch = list(itertools.islice(source, due))
        for event in batch:
            pipe.xadd(stream, encode_event(event))  # type: ignore[arg-type]  # redis-py: dict is invariant
        if not batch:
            exhausted = True
        else:
            try:
                pipe.execute()
            except (*REDIS_UNREACHABLE, *REDIS_REFUSING_WRITES) as exc:
                raise FeedOutage(FeedStats(sent, time.perf_counter() - started), batch, exc) from exc
            sent += len(batch)
            if on_sent is not None:
                on_sent(len(batch))
    return FeedStats(sent=sent, elapsed_s=time.perf_counter() - started)
