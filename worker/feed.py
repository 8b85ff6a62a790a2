"""The upstream stand-in's feed: synergy events from the simulator or replayed bars, sent at a chosen rate."""

from __future__ import annotations

import itertools
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import redis

from models.simulator import SimulatorConfig, simulate_bars
from models.synergy import synergy_events
from worker.connection import REDIS_REFUSING_WRITES, REDIS_UNREACHABLE
from worker.events import encode_event
from worker.names import INPUT_STREAM
from worker.records import SynergyEvent
from worker.stream_entries import read_after


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


@dataclass(frozen=True)
class FeedStats:
    sent: int
    elapsed_s: float

    @property
    def rate(self) -> float:
        return self.sent / self.elapsed_s if self.elapsed_s > 0 else 0.0


class FeedOutage(Exception):
    """Redis went away mid-feed, or took no writes (a failover left the address on a replica, memory full). `stats`
    counts the events known sent; of the batch in flight (`unsent`), its first events may have landed (Redis runs a
    pipeline in order). A feed that goes on sends again what of that batch it does not find in the stream
    (`ResumableFeed.resume`): nothing is lost, and an event that had landed unseen comes back as a duplicate, which the
    worker acks without a second decision (the same correlation id). `written` is the id of the last entry this feed
    is known to have written before that batch (None: none in this call)."""

    def __init__(self, stats: FeedStats, unsent: Sequence[SynergyEvent], cause: Exception,
                 written: bytes | None = None) -> None:
        what = "unreachable" if isinstance(cause, REDIS_UNREACHABLE) else "refusing writes"
        super().__init__(f"Redis {what} after {stats.sent} events sent ({len(unsent)} more in flight, their fate "
                         f"unknown): {cause}")
        self.stats = stats
        self.unsent = tuple(unsent)
        self.cause = cause
        self.written = written

    @property
    def in_flight(self) -> int:
        return len(self.unsent)


class ResumableFeed(Iterator[SynergyEvent]):
    """A feed's events, into which the batch in flight at an outage is put back, in front and in order, to be sent
    again (`put_back`, or `resume`: only what did not land); as many outages as come, without nesting iterators.

    `written_after` is a stream id this feed's events all come after (the stream's last id before the feed started,
    then the last entry it is known to have written): where `resume` looks for what landed. None: not known, so
    nothing is looked for and the whole batch is sent again."""

    def __init__(self, events: Iterable[SynergyEvent], written_after: bytes | None = None) -> None:
        self._source = iter(events)
        self._front: deque[SynergyEvent] = deque()
        self.written_after = written_after

    def put_back(self, batch: Sequence[SynergyEvent]) -> None:
        self._front.extendleft(reversed(batch))

    def resume(self, client: redis.Redis, outage: FeedOutage, stream: str = INPUT_STREAM) -> int:
        """Once Redis answers again after `outage`: put back the part of the batch in flight not found in the stream;
        returns how many of its events had landed (sent: not to be sent again). A stream that cannot be read leaves
        the whole batch to be sent again."""
        if outage.written is not None:
            self.written_after = outage.written
        landed = 0
        if self.written_after is not None:
            try:
                landed, last = landed_prefix(client, outage.unsent, self.written_after, stream=stream)
            except redis.RedisError:
                landed, last = 0, None
            if last is not None:
                self.written_after = last
        self.put_back(outage.unsent[landed:])
        return landed

    def __next__(self) -> SynergyEvent:
        return self._front.popleft() if self._front else next(self._source)


LANDED_SCAN_SLACK = 1000  # entries of other producers, between the feed's, that a look for what landed reads past
_LANDED_PAGE = 200


def landed_prefix(client: redis.Redis, batch: Sequence[SynergyEvent], after_id: bytes,
                  stream: str = INPUT_STREAM) -> tuple[int, bytes | None]:
    """How many of `batch`'s first events are in `stream` after `after_id`, and the id of the last of them: what landed
    of a pipeline whose replies an outage took. Redis runs a pipeline in order, so what landed is its first events;
    they are matched in order by correlation id, past other producers' entries. Only an event seen counts as landed:
    one not found (beyond `LANDED_SCAN_SLACK` others, or lost by a Redis that restarted) is sent again — a duplicate
    at worst, never a lost event."""
    landed, last, scanned, cursor = 0, None, 0, after_id
    while landed < len(batch) and scanned < len(batch) + LANDED_SCAN_SLACK:
        page = read_after(client, stream, cursor, count=_LANDED_PAGE)
        for entry_id, fields in page:
            if fields.get(b"correlation_id") == batch[landed].correlation_id.encode():
                landed, last = landed + 1, entry_id
                if landed == len(batch):
                    break
        if len(page) < _LANDED_PAGE:
            break
        scanned += len(page)
        cursor = page[-1][0]
    return landed, last


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
    was in flight (a `ResumableFeed` takes back what of it did not land, to send it again)."""
    started = time.perf_counter()
    sent = 0
    written: bytes | None = None
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
                written = pipe.execute()[-1]
            except (*REDIS_UNREACHABLE, *REDIS_REFUSING_WRITES) as exc:
                raise FeedOutage(FeedStats(sent, time.perf_counter() - started), batch, exc, written) from exc
            sent += len(batch)
            if on_sent is not None:
                on_sent(len(batch))
    return FeedStats(sent=sent, elapsed_s=time.perf_counter() - started)
