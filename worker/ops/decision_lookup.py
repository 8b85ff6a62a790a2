"""What became of one event, by its correlation id: its decision as the worker recorded it (votes, scores, reason,
timings, model), the execution command it sent, or where the event is instead (in flight, dead-lettered).

The decision `tactical:completed:{cid}` names (its entry id, kept a day: `TACTICAL_COMPLETED_TTL_S`) is read
directly, even when older than what is scanned; every decision of the id is looked for among the newest ones too (a
bounded scan), since one decided again after its key expired, was evicted or cleaned has the key again, naming only
the newest.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import redis

from worker.decision_entry import (
    decision_confidences,
    decision_scores,
    decision_votes,
    entry_timings_ms,
)
from worker.names import COMMANDS_STREAM, DEAD_LETTER_STREAM, DECISIONS_STREAM, completed_key, processing_key
from worker.ops.duplicates import iter_newest
from worker.redis_text import as_number, as_text
from worker.stream_entries import Entry, entries, entry_time_ms, parse_stream_id, stream_id_ms

DEFAULT_SCAN = 100_000  # newest decisions looked through for every decision of an id
DEAD_LETTER_SCAN = 10_000  # newest dead letters looked through (each carries its event's matrix: ~2 KB)
COMMAND_SEARCH = 1_000  # commands read on each side of a decision's time: its own is written by the same commit


@dataclass(frozen=True, slots=True)
class CommandRecord:
    command_id: str
    fields: dict[str, str]  # as written: side, quantity, price, stop_loss, take_profit, order_type, …

    def as_dict(self) -> dict[str, Any]:
        return {"command_id": self.command_id, **self.fields}


@dataclass(frozen=True, slots=True)
class DecisionRecord:
    correlation_id: str
    decision_id: str
    decided_at: str  # ISO-8601 UTC, from the decision's stream id
    event_id: str | None
    latency_ms: int | None  # from the event's XADD to the decision's, by their stream ids
    synergy_type: str
    direction: str
    action: str
    score: float | None
    execute: bool
    reason: str
    model_version: str
    scores: dict[str, float]
    votes: dict[str, tuple[float, ...]]
    confidences: dict[str, float]
    timings_ms: dict[str, float]
    command: CommandRecord | None = None
    command_missing: bool = False  # executed, but no command with its id was found after it (trimmed, deleted)

    def as_dict(self) -> dict[str, Any]:
        return {
            "correlation_id": self.correlation_id, "decision_id": self.decision_id, "decided_at": self.decided_at,
            "event_id": self.event_id, "latency_ms": self.latency_ms, "synergy_type": self.synergy_type,
            "direction": self.direction, "action": self.action, "score": self.score, "execute": self.execute,
            "reason": self.reason, "model_version": self.model_version, "scores": self.scores,
            "votes": {agent: list(p) for agent, p in self.votes.items()}, "confidences": self.confidences,
            "timings_ms": self.timings_ms, "command": None if self.command is None else self.command.as_dict(),
            "command_missing": self.command_missing,
        }


@dataclass(frozen=True, slots=True)
class EventWhereabouts:
    """Everything found for one correlation id. `decisions` newest first: more than one means it was decided again
    after its completed key expired (a resend a day later), or a duplicate."""

    correlation_id: str
    decisions: tuple[DecisionRecord, ...] = ()
    completed_key_entry: str | None = None  # the decision id its completed key holds (None: no key)
    in_flight: str | None = None  # its lease: `owner|entry` — a worker is deciding it now
    dead_letters: tuple[dict[str, str], ...] = ()  # entry id, reason, delivery count of each dead letter
    decisions_scanned: int = 0  # decisions read by the scan (0: the completed key led straight to it)
    scan_truncated: bool = False
    dead_letters_truncated: bool = False  # more dead letters than DEAD_LETTER_SCAN: older ones not looked at
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def found(self) -> bool:
        return bool(self.decisions or self.in_flight or self.dead_letters)

    def as_dict(self) -> dict[str, Any]:
        return {
            "correlation_id": self.correlation_id, "found": self.found,
            "decisions": [d.as_dict() for d in self.decisions], "completed_key_entry": self.completed_key_entry,
            "in_flight": self.in_flight, "dead_letters": list(self.dead_letters),
            "decisions_scanned": self.decisions_scanned, "scan_truncated": self.scan_truncated,
            "dead_letters_truncated": self.dead_letters_truncated,
            "notes": list(self.notes),
        }


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def read_decision(decision_id: bytes, fields: Mapping[bytes, bytes]) -> DecisionRecord:
    """One decision entry as a record, whichever worker version wrote it."""
    event_id = fields.get(b"event_id")
    event_ms = stream_id_ms(event_id)
    decided_ms = entry_time_ms(decision_id)
    return DecisionRecord(
        correlation_id=as_text(fields.get(b"correlation_id")),
        decision_id=as_text(decision_id),
        decided_at=_iso(decided_ms),
        event_id=None if event_id is None else as_text(event_id),
        latency_ms=None if event_ms is None else decided_ms - event_ms,
        synergy_type=as_text(fields.get(b"synergy_type")),
        direction=as_text(fields.get(b"direction")),
        action=as_text(fields.get(b"action")),
        score=as_number(fields.get(b"score")),
        execute=fields.get(b"execute") == b"1",
        reason=as_text(fields.get(b"reason")),
        model_version=as_text(fields.get(b"model_version")),
        scores=decision_scores(fields),
        votes=decision_votes(fields),
        confidences=decision_confidences(fields),
        timings_ms=entry_timings_ms(fields),
    )


def _find_command(client: redis.Redis, decision: DecisionRecord, taken: set[str], *,
                  before: bool) -> CommandRecord | None:
    """The first command for the decision's id from its millisecond on (each stream numbers its own ids, so within
    one millisecond the command's may sort before the decision's), or with `before` the nearest one before it. A
    command in `taken` is another decision's."""
    wanted = decision.correlation_id.encode()
    at = f"{entry_time_ms(decision.decision_id)}-0"
    bound = {"upper": "(" + at} if before else {"lower": at}
    for command_id, fields in entries(client, COMMANDS_STREAM, count=COMMAND_SEARCH, newest_first=before, **bound):
        if fields.get(b"correlation_id") == wanted and as_text(command_id) not in taken:
            taken.add(as_text(command_id))
            return CommandRecord(as_text(command_id), {as_text(k): as_text(v) for k, v in fields.items()})
    return None


def _with_commands(client: redis.Redis, decisions: list[DecisionRecord]) -> list[DecisionRecord]:
    """Each executed decision (newest first) with the command its commit wrote: looked for from its time on, oldest
    decision first; then, for those without one, before it, newest first — a stream's ids never go back, so after
    the clock stepped back the decisions stream's may run ahead of the commands stream's. Each command is one
    decision's."""
    taken: set[str] = set()
    commands: dict[str, CommandRecord | None] = {}
    executed = [d for d in decisions if d.execute]
    for decision in reversed(executed):
        commands[decision.decision_id] = _find_command(client, decision, taken, before=False)
    for decision in executed:
        if commands[decision.decision_id] is None:
            commands[decision.decision_id] = _find_command(client, decision, taken, before=True)
    return [d if not d.execute else replace(d, command=commands[d.decision_id],
                                            command_missing=commands[d.decision_id] is None) for d in decisions]


def _newest_of(client: redis.Redis, stream: str, correlation_id: bytes, limit: int) -> tuple[list[Entry], int, bool]:
    """The entries of `correlation_id` among the newest `limit` of `stream`, read a page at a time and not held:
    (those entries, how many were read, whether older ones were left unread)."""
    matches: list[Entry] = []
    scanned = 0
    for entry_id, fields in iter_newest(client, stream, limit=limit + 1):
        if scanned == limit:
            return matches, scanned, True
        scanned += 1
        if fields.get(b"correlation_id") == correlation_id:
            matches.append((entry_id, fields))
    return matches, scanned, False


def find_event(client: redis.Redis, correlation_id: str, *, scan: int = DEFAULT_SCAN) -> EventWhereabouts:
    """What became of the event `correlation_id`: its decisions (with their commands), its lease if a worker holds
    it now, its dead letters."""
    wanted = correlation_id.encode()
    notes: list[str] = []
    completed = client.get(completed_key(correlation_id))
    decisions: list[DecisionRecord] = []
    if completed is not None and stream_id_ms(completed) is None:
        notes.append(f"its completed key holds {as_text(completed)!r}, not a decision id")
    elif completed is not None:
        found = entries(client, DECISIONS_STREAM, lower=completed, upper=completed, count=1)
        if found and found[0][1].get(b"correlation_id") == wanted:
            decisions.append(read_decision(*found[0]))
        else:
            notes.append(f"its completed key names decision {as_text(completed)}, which is no longer in "
                         f"{DECISIONS_STREAM} (trimmed or deleted): decided, but the record is gone")
    # Scanned even when the key led to one: an id decided again after its key expired or was evicted has the key
    # again, naming only the newest decision.
    keyed = {d.decision_id for d in decisions}
    found, scanned, truncated = _newest_of(client, DECISIONS_STREAM, wanted, scan)
    decisions += [read_decision(entry_id, fields) for entry_id, fields in found if as_text(entry_id) not in keyed]
    decisions.sort(key=lambda d: parse_stream_id(d.decision_id), reverse=True)
    lease = client.get(processing_key(correlation_id))
    letters, _, dead_truncated = _newest_of(client, DEAD_LETTER_STREAM, wanted, DEAD_LETTER_SCAN)
    dead = [{"entry_id": as_text(fields.get(b"dead_entry_id", entry_id)), "dead_letter_id": as_text(entry_id),
             "reason": as_text(fields.get(b"dead_reason")),
             "delivery_count": as_text(fields.get(b"dead_delivery_count"))}
            for entry_id, fields in letters]
    return EventWhereabouts(
        correlation_id=correlation_id,
        decisions=tuple(_with_commands(client, decisions)),
        completed_key_entry=None if completed is None else as_text(completed),
        in_flight=None if lease is None else as_text(lease),
        dead_letters=tuple(dead),
        decisions_scanned=scanned,
        scan_truncated=truncated,
        dead_letters_truncated=dead_truncated,
        notes=tuple(notes),
    )


__all__ = ["DEAD_LETTER_SCAN", "DEFAULT_SCAN", "CommandRecord", "DecisionRecord", "EventWhereabouts", "find_event",
           "read_decision"]
