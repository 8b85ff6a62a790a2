"""Duplicate processing, seen from outside: correlation ids that arrive (or, worse, execute) more than once.

A correlation id repeated in `synergy_events` is the producer re-sending (or redelivery): the idempotency keys make
it one decision, and the worker counts it in `tactical_duplicate_events_total`. A correlation id repeated in
`execution_commands` would be a second trade for one event — the one thing exactly-once output must never do.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import redis
from prometheus_client.samples import Sample

from worker.names import COMMANDS_STREAM, DEAD_LETTER_STREAM, INPUT_STREAM, REPLAYED_FROM_FIELD
from worker.ops.fleet import Families, FleetCounter, WorkerCounter, WorkerMetrics, read_fleet_metrics
from worker.redis_text import as_text
from worker.stream_entries import Entry, entry_time_ms, paged, parse_stream_id, server_now_ms

PAGE = 1000
DUPLICATE_COUNTER = "tactical_duplicate_events_total"
DUPLICATE_WINDOW_S = 15 * 60.0  # what TacticalDuplicateEvents and the market-hours check watch
WINDOW_COMMAND_LIMIT = 200_000  # commands read at most for a window: 15 min at over 200 trades/s
WINDOW_INPUT_LIMIT = 20_000  # events read at most for a window (~40 MB: each carries its 1,680-byte matrix)
_REPLAYED_FROM = REPLAYED_FROM_FIELD.encode()


@dataclass(frozen=True, slots=True)
class Offender:
    """A correlation id seen more than once: how often, in which entries, over what time."""

    correlation_id: str
    count: int
    entry_ids: tuple[str, ...]

    @property
    def first_ms(self) -> int:
        return min(entry_time_ms(e) for e in self.entry_ids)

    @property
    def last_ms(self) -> int:
        return max(entry_time_ms(e) for e in self.entry_ids)

    def as_dict(self) -> dict[str, Any]:
        return {
            "correlation_id": self.correlation_id,
            "count": self.count,
            "entry_ids": list(self.entry_ids),
            "first_ms": self.first_ms,
            "last_ms": self.last_ms,
        }


@dataclass(frozen=True, slots=True)
class ScanResult:
    scanned: int
    truncated: bool  # the limit stopped the scan before the range was exhausted
    offenders: tuple[Offender, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "scanned": self.scanned,
            "truncated": self.truncated,
            "offenders": [o.as_dict() for o in self.offenders],
        }


def repeated_ids(entries: Iterable[tuple[bytes | str, Mapping[bytes, bytes]]]) -> list[Offender]:
    """Correlation ids appearing in more than one entry, most repeated first (entries without an id are skipped)."""
    seen: dict[str, list[str]] = {}
    for entry_id, fields in entries:
        correlation_id = fields.get(b"correlation_id")
        if correlation_id is None:
            continue
        seen.setdefault(as_text(correlation_id), []).append(as_text(entry_id))
    offenders = [
        Offender(cid, len(ids), tuple(sorted(ids, key=parse_stream_id)))
        for cid, ids in seen.items()
        if len(ids) > 1
    ]
    return sorted(offenders, key=lambda o: (-o.count, o.correlation_id))


def iter_newest(
    client: redis.Redis, stream: str, *, limit: int, since_ms: int | None = None, until_ms: int | None = None
) -> Iterator[Entry]:
    """Entries of `stream` newest first, at most `limit`, optionally only those with ids in [since_ms, until_ms]."""
    upper = "+" if until_ms is None else str(until_ms)
    lower = "-" if since_ms is None else f"{since_ms}-0"
    return paged(client, stream, page=PAGE, lower=lower, upper=upper, newest_first=True, limit=limit)


def scan_offenders(
    client: redis.Redis, stream: str, *, limit: int, since_ms: int | None = None, until_ms: int | None = None,
    unless_field: bytes | None = None,
) -> ScanResult:
    """Repeated correlation ids among the newest `limit` entries; an entry carrying `unless_field` is scanned but
    not taken for a copy."""
    entries = list(iter_newest(client, stream, limit=limit + 1, since_ms=since_ms, until_ms=until_ms))
    truncated = len(entries) > limit
    entries = entries[:limit]
    copies = entries if unless_field is None else [entry for entry in entries if unless_field not in entry[1]]
    return ScanResult(len(entries), truncated, tuple(repeated_ids(copies)))


def input_offenders(client: redis.Redis, *, last: int, stream: str = INPUT_STREAM) -> ScanResult:
    """Correlation ids sent more than once among the last `last` entries of the input stream, judged as
    `window_resends` judges a window: neither a `dead-letter replay` nor a copy that was itself dead-lettered is a
    resend."""
    inputs = scan_offenders(client, stream, limit=last, unless_field=_REPLAYED_FROM)
    return _less_dead_lettered(client, inputs, limit=max(last, WINDOW_INPUT_LIMIT))


def duplicate_commands(client: redis.Redis, *, last: int, stream: str = COMMANDS_STREAM) -> ScanResult:
    """Correlation ids with more than one execution command among the last `last`: must always be empty."""
    return scan_offenders(client, stream, limit=last)


def require_window(window_s: float) -> None:
    """ValueError for a window that holds nothing; the CLI asks before it reads Redis."""
    if not window_s > 0:
        raise ValueError(f"a window of {window_s:g} s holds nothing: give one > 0 (e.g. 15m)")


def window_start_ms(client: redis.Redis, window_s: float) -> int:
    """Where a window of `window_s` ending now begins, by Redis's clock (the one its stream ids are stamped with);
    0 for a window longer than that clock."""
    require_window(window_s)
    return max(0, server_now_ms(client) - int(window_s * 1000))


@dataclass(frozen=True, slots=True)
class WindowScan:
    """The duplicates of a recent window: repeated execution commands (never allowed) and ids sent again."""

    commands: ScanResult
    resent: ScanResult  # ids sent more than once, less replays and copies sent after the first was dead-lettered


def window_commands(client: redis.Redis, window_s: float = DUPLICATE_WINDOW_S, *,
                    limit: int = WINDOW_COMMAND_LIMIT) -> ScanResult:
    """Correlation ids with more than one execution command in the window: every command of it (at most `limit`,
    newest first), not a fixed count: at 50 events/s a thousand commands are half a minute, and a second trade
    from minutes ago must still be seen."""
    return scan_offenders(client, COMMANDS_STREAM, limit=limit, since_ms=window_start_ms(client, window_s))


def window_resends(client: redis.Redis, window_s: float = DUPLICATE_WINDOW_S, *,
                   limit: int = WINDOW_INPUT_LIMIT) -> ScanResult:
    """Correlation ids sent more than once in the window (at most `limit` events, newest first: each carries its
    matrix), counting only copies that could be decided: not a `dead-letter replay` (it marks what it re-adds with
    REPLAYED_FROM_FIELD), nor a copy that was itself dead-lettered (an upstream's corrected event follows it)."""
    inputs = scan_offenders(client, INPUT_STREAM, limit=limit, since_ms=window_start_ms(client, window_s),
                            unless_field=_REPLAYED_FROM)
    return _less_dead_lettered(client, inputs, limit=limit)


def _less_dead_lettered(client: redis.Redis, inputs: ScanResult, *, limit: int) -> ScanResult:
    """The offenders that still have more than one copy once the copies that were dead-lettered (the dead letters
    written since the first of them, at most `limit`) are left out."""
    if not inputs.offenders:
        return inputs
    earliest_ms = min(offender.first_ms for offender in inputs.offenders)
    dead = {as_text(fields.get(b"dead_entry_id", b"")) for _, fields in
            iter_newest(client, DEAD_LETTER_STREAM, limit=limit, since_ms=earliest_ms)}
    kept = tuple(o for o in inputs.offenders if len([e for e in o.entry_ids if e not in dead]) > 1)
    return ScanResult(inputs.scanned, inputs.truncated, kept)


def scan_window(client: redis.Redis, window_s: float = DUPLICATE_WINDOW_S) -> WindowScan:
    """Both scans of the window."""
    return WindowScan(window_commands(client, window_s), window_resends(client, window_s))


def duplicate_events_total(families: Mapping[str, list[Sample]]) -> float | None:
    """The worker's `tactical_duplicate_events_total`; None when /metrics does not carry it."""
    for sample in families.get(DUPLICATE_COUNTER.removesuffix("_total"), []):
        if sample.name == DUPLICATE_COUNTER:
            return float(sample.value)
    return None


@dataclass(frozen=True, slots=True)
class FleetDuplicates(FleetCounter[float]):
    """The duplicate counters of every live worker: each counts only the duplicates it caught itself."""

    @property
    def total(self) -> float | None:
        """The sum of the counters read; None when none was."""
        read = self.read
        return sum(worker.value or 0.0 for worker in read) if read else None

    def summary(self) -> str:
        """`7 duplicate events caught by 2 worker(s) since each started (host-a:101 3, host-b:202 4)`: the sum and
        each counter read, as every command says it."""
        if not self.read:
            return "duplicate counter unavailable"
        counted = ", ".join(f"{worker.name} {int(worker.value or 0)}" for worker in self.read)
        return f"{int(self.total or 0)} duplicate events caught by {len(self.read)} worker(s) since each started " \
               f"({counted})"

    def shortfall(self) -> str:
        """What the sum leaves out, with why (`FleetCounter.left_out`)."""
        return self.left_out("their duplicates are missing from that total",
                             " — `tacticalctl --worker-url <its address> duplicates` where it is reachable")

    def as_dict(self) -> dict[str, Any]:
        return {"duplicate_events_total": self.total,
                "workers": [worker.as_dict("duplicate_events_total") for worker in self.workers]}


def fleet_duplicate_events(
    client: redis.Redis, worker_url: str, *, metrics: Callable[[], Families],
    health: Callable[[], tuple[int, Mapping[str, Any]]], timeout_s: float,
) -> FleetDuplicates:
    """`tactical_duplicate_events_total` of the worker at `worker_url` and of every other live worker
    (`read_fleet_metrics`). A worker not read is in the answer with why, never taken for 0."""
    return duplicates_of(read_fleet_metrics(client, worker_url, metrics=metrics, health=health, timeout_s=timeout_s))


def duplicates_of(fleet: Iterable[WorkerMetrics]) -> FleetDuplicates:
    """The duplicate counter of each worker of `fleet`, as read."""
    return FleetDuplicates(tuple(WorkerCounter.of(worker, DUPLICATE_COUNTER, duplicate_events_total)
                                 for worker in fleet))


__all__ = [
    "DUPLICATE_WINDOW_S",
    "FleetDuplicates",
    "Offender",
    "ScanResult",
    "WindowScan",
    "duplicate_commands",
    "duplicate_events_total",
    "duplicates_of",
    "fleet_duplicate_events",
    "input_offenders",
    "iter_newest",
    "repeated_ids",
    "require_window",
    "scan_offenders",
    "scan_window",
    "window_commands",
    "window_resends",
]
