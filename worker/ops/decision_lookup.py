"""What became of one event, by its correlation id: its decision as the worker recorded it (votes, scores, reason,
timings, model), the execution command it sent, or where the event is instead (in flight, dead-lettered).

The decision is found through `tactical:completed:{cid}`, which holds its entry id for a day
(`TACTICAL_COMPLETED_TTL_S`): one XRANGE. Once the key has expired, by a bounded scan of the newest decisions.
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
from worker.redis_text import as_text
from worker.stream_entries import entries, entry_time_ms

DEFAULT_SCAN = 100_000  # newest decisions (and dead letters) looked through when no completed key points at one
COMMAND_SEARCH = 1_000  # commands read after the decision's id: its own is written by the same commit, after it


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
            "notes": list(self.notes),
        }


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _float(raw: bytes | None) -> float | None:
    try:
        return None if raw is None else float(raw)
    except ValueError:
        return None


def read_decision(decision_id: bytes, fields: Mapping[bytes, bytes]) -> DecisionRecord:
    """One decision entry as a record, whichever worker version wrote it."""
    event_id = fields.get(b"event_id")
    decided_ms = entry_time_ms(decision_id)
    return DecisionRecord(
        correlation_id=as_text(fields.get(b"correlation_id")),
        decision_id=as_text(decision_id),
        decided_at=_iso(decided_ms),
        event_id=None if event_id is None else as_text(event_id),
        latency_ms=None if event_id is None else decided_ms - entry_time_ms(event_id),
        synergy_type=as_text(fields.get(b"synergy_type")),
        direction=as_text(fields.get(b"direction")),
        action=as_text(fields.get(b"action")),
        score=_float(fields.get(b"score")),
        execute=fields.get(b"execute") == b"1",
        reason=as_text(fields.get(b"reason")),
        model_version=as_text(fields.get(b"model_version")),
        scores=decision_scores(fields),
        votes=decision_votes(fields),
        confidences=decision_confidences(fields),
        timings_ms=entry_timings_ms(fields),
    )


def _with_command(client: redis.Redis, decision: DecisionRecord) -> DecisionRecord:
    if not decision.execute:
        return decision
    wanted = decision.correlation_id.encode()
    # Its command's id may sort before the decision's within one millisecond (each stream numbers its own).
    lower = f"{entry_time_ms(decision.decision_id)}-0"
    for command_id, fields in entries(client, COMMANDS_STREAM, lower=lower, count=COMMAND_SEARCH):
        if fields.get(b"correlation_id") == wanted:
            record = CommandRecord(as_text(command_id), {as_text(k): as_text(v) for k, v in fields.items()})
            return replace(decision, command=record)
    return replace(decision, command_missing=True)


def find_event(client: redis.Redis, correlation_id: str, *, scan: int = DEFAULT_SCAN) -> EventWhereabouts:
    """What became of the event `correlation_id`: its decisions (with their commands), its lease if a worker holds
    it now, its dead letters."""
    wanted = correlation_id.encode()
    notes: list[str] = []
    completed = client.get(completed_key(correlation_id))
    decisions: list[DecisionRecord] = []
    scanned, truncated = 0, False
    if completed is not None:
        found = entries(client, DECISIONS_STREAM, lower=completed, upper=completed, count=1)
        if found and found[0][1].get(b"correlation_id") == wanted:
            decisions.append(read_decision(*found[0]))
        else:
            notes.append(f"its completed key names decision {as_text(completed)}, which is no longer in "
                         f"{DECISIONS_STREAM} (trimmed or deleted): decided, but the record is gone")
    if not decisions:
        for decision_id, fields in iter_newest(client, DECISIONS_STREAM, limit=scan + 1):
            scanned += 1
            if scanned > scan:
                truncated, scanned = True, scan
                break
            if fields.get(b"correlation_id") == wanted:
                decisions.append(read_decision(decision_id, fields))
    lease = client.get(processing_key(correlation_id))
    dead = [{"entry_id": as_text(fields.get(b"dead_entry_id", entry_id)), "dead_letter_id": as_text(entry_id),
             "reason": as_text(fields.get(b"dead_reason")),
             "delivery_count": as_text(fields.get(b"dead_delivery_count"))}
            for entry_id, fields in iter_newest(client, DEAD_LETTER_STREAM, limit=scan)
            if fields.get(b"correlation_id") == wanted]
    return EventWhereabouts(
        correlation_id=correlation_id,
        decisions=tuple(_with_command(client, d) for d in decisions),
        completed_key_entry=None if completed is None else as_text(completed),
        in_flight=None if lease is None else as_text(lease),
        dead_letters=tuple(dead),
        decisions_scanned=scanned,
        scan_truncated=truncated,
        notes=tuple(notes),
    )


__all__ = ["DEFAULT_SCAN", "CommandRecord", "DecisionRecord", "EventWhereabouts", "find_event", "read_decision"]
