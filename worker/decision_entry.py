"""A decision and its command as stream entries: the fields the commit writes, and their reading back by the tools.

Flat fields, no JSON, `correlation_id` top-level so tools can scan and join. The numbers of a decision's record —
the three scores, each agent's three probabilities and its confidence — are little-endian binary, as the event's
matrix is (`matrix_encoding=f32le`): written as text they were two thirds of a decision entry's ~640 bytes, and
every byte of it is paid for by the worker, by Redis (the entry, its AOF, each reader's reply) and by every reader
(as binary, the entry is 361 bytes: ~9 µs less of the worker's CPU and of Redis's an event under full load;
bench/PERFORMANCE.md). Each field's name
says its encoding; `decision_scores`, `decision_votes` and `decision_confidences` read them (and the text fields a
worker wrote before 2026-11-29, which a stream holds during an upgrade and for as long as it keeps its entries).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping

from worker.actions import ACTION_ORDER, AGENT_NAMES
from worker.records import Decision, ExecutionCommand
from worker.redis_text import as_number

SCORES_FIELD = "scores_f64le"  # float64 per action, in ACTION_ORDER: the weighted sums, exactly
VOTES_FIELD = "votes_f32le"  # float32 per agent (AGENT_NAMES) per action (ACTION_ORDER): what the agents output
CONFIDENCES_FIELD = "confidences_f32le"  # float32 per agent, in AGENT_NAMES order
TIMINGS_FIELD = "timings_ms"  # `validate=0.293 claim=0.011 …`: the batch's stage times, ms

_SCORES = struct.Struct(f"<{len(ACTION_ORDER)}d")
_VOTES = struct.Struct(f"<{len(AGENT_NAMES) * len(ACTION_ORDER)}f")
_CONFIDENCES = struct.Struct(f"<{len(AGENT_NAMES)}f")
_TIMING_MS = "%.3f"  # a stage's time to the microsecond: finer is noise


def _num(value: float) -> str:
    # repr is the shortest text that reads back as the same float: prices survive exactly.
    return repr(float(value))


def timing_fields(timings_ms: Mapping[str, float]) -> dict[str, str]:
    """The batch's stage times as one field shared by every decision and command of the batch: formatted once per
    batch, added to each entry by the commit."""
    return {TIMINGS_FIELD: " ".join(f"{stage}={_TIMING_MS % ms}" for stage, ms in timings_ms.items())}


def decision_fields(decision: Decision, event_id: bytes | None = None) -> dict[str, str | bytes]:
    """Stream fields of a decision. `event_id` is the input entry the decision answers. What a whole batch shares —
    `model_version` and the `timing_fields` — is added by the commit, sent once per batch."""
    votes = decision.votes
    # The layout is positional: votes in any other order would be written under other agents' names.
    if tuple(vote.agent for vote in votes) != AGENT_NAMES:
        raise ValueError(f"votes of {[vote.agent for vote in votes]}, expected one of each of {AGENT_NAMES} in order")
    fields: dict[str, str | bytes] = {
        "correlation_id": decision.correlation_id,
        "synergy_type": decision.synergy_type.value,
        "direction": str(decision.direction),
        "action": decision.action.label,
        "score": repr(float(decision.score)),
        "execute": "1" if decision.execute else "0",
        "reason": decision.reason,
        SCORES_FIELD: _SCORES.pack(*decision.scores),
        VOTES_FIELD: _VOTES.pack(*[p for vote in votes for p in vote.probabilities]),
        CONFIDENCES_FIELD: _CONFIDENCES.pack(*[vote.confidence for vote in votes]),
    }
    if event_id is not None:
        fields["event_id"] = event_id
    return fields


def command_fields(command: ExecutionCommand) -> dict[str, str]:
    """Stream fields of an execution command; the batch's `timing_fields` are added by the commit."""
    return {
        "correlation_id": command.correlation_id,
        "symbol": command.symbol,
        "side": command.side,
        "quantity": str(command.quantity),
        "order_type": command.order_type,
        "time_in_force": command.time_in_force,
        "price": _num(command.price),
        "stop_loss": _num(command.stop_loss),
        "take_profit": _num(command.take_profit),
        "model_version": command.model_version,
    }


def _unpacked(fields: Mapping[bytes, bytes], name: str, layout: struct.Struct) -> tuple[float, ...] | None:
    raw = fields.get(name.encode())
    return layout.unpack(raw) if raw is not None and len(raw) == layout.size else None


def _old_text(fields: Mapping[bytes, bytes], prefix: str, names: tuple[str, ...]) -> dict[str, str]:
    """`{prefix}{name}` fields of a decision written before 2026-11-29, as text by name."""
    return {name: fields[key].decode(errors="replace")
            for name in names if (key := f"{prefix}{name}".encode()) in fields}


def decision_scores(fields: Mapping[bytes, bytes]) -> dict[str, float]:
    """The score of each action (ACTION_ORDER) a decision entry records; {} if it records none readable."""
    scores = _unpacked(fields, SCORES_FIELD, _SCORES)
    if scores is not None:
        return {action: v for action, v in zip(ACTION_ORDER, scores, strict=True) if math.isfinite(v)}
    return _floats(_old_text(fields, "score_", ACTION_ORDER))


def decision_votes(fields: Mapping[bytes, bytes]) -> dict[str, tuple[float, ...]]:
    """Each agent's probabilities (in ACTION_ORDER) a decision entry records; {} if it records none readable."""
    values = _unpacked(fields, VOTES_FIELD, _VOTES)
    width = len(ACTION_ORDER)
    if values is not None:
        rows = {agent: values[i * width:(i + 1) * width] for i, agent in enumerate(AGENT_NAMES)}
        return {agent: row for agent, row in rows.items() if all(map(math.isfinite, row))}
    votes: dict[str, tuple[float, ...]] = {}
    for agent, text in _old_text(fields, "vote_", AGENT_NAMES).items():
        try:
            probabilities = tuple(float(p) for p in text.split(","))
        except ValueError:
            continue
        if len(probabilities) == width and all(map(math.isfinite, probabilities)):
            votes[agent] = probabilities
    return votes


def decision_confidences(fields: Mapping[bytes, bytes]) -> dict[str, float]:
    """Each agent's confidence a decision entry records; {} if it records none readable."""
    values = _unpacked(fields, CONFIDENCES_FIELD, _CONFIDENCES)
    if values is not None:
        return {agent: v for agent, v in zip(AGENT_NAMES, values, strict=True) if math.isfinite(v)}
    return _floats(_old_text(fields, "confidence_", AGENT_NAMES))


def entry_timings_ms(fields: Mapping[bytes, bytes]) -> dict[str, float]:
    """The stage times (ms) a decision or command entry carries: `timings_ms`, or one `{stage}_ms` field each as a
    worker wrote them before 2026-11-29. A value that is not a finite number is left out."""
    raw = fields.get(TIMINGS_FIELD.encode(), b"").decode(errors="replace")
    texts = dict(part.split("=", 1) for part in raw.split() if "=" in part)
    texts.update((name[:-3].decode(errors="replace"), value.decode(errors="replace"))
                 for name, value in fields.items() if name.endswith(b"_ms") and name != TIMINGS_FIELD.encode())
    return _floats(texts)


def _floats(texts: Mapping[str, str]) -> dict[str, float]:
    return {name: number for name, text in texts.items() if (number := as_number(text)) is not None}


__all__ = [
    "CONFIDENCES_FIELD",
    "SCORES_FIELD",
    "TIMINGS_FIELD",
    "VOTES_FIELD",
    "command_fields",
    "decision_confidences",
    "decision_fields",
    "decision_scores",
    "decision_votes",
    "entry_timings_ms",
    "timing_fields",
]
