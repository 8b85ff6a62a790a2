"""The records that flow through the worker: an event in, a decision (and maybe a command) out."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TypeVar, dataclass_transform

import numpy as np

from worker.actions import ACTION_ORDER, AGENT_NAMES, Action

_Record = TypeVar("_Record")


@dataclass_transform(frozen_default=True, field_specifiers=(field,))
def per_event_record(cls: type[_Record]) -> type[_Record]:
    """A record the hot path builds for every event: frozen to the type checker (mypy flags an assignment, tested),
    a plain slots dataclass at run time, hashable as a frozen one is. A frozen dataclass sets each field through
    `object.__setattr__`: building one of 9 fields took 3.8 µs against 0.8 µs for this, and a worker builds ~8 records
    an event. Measured in one process over 6,000 events at batch 100, validating, aggregating, writing the fields and
    the telemetry cost ~35 µs less an event this way (of ~230)."""
    return dataclass(slots=True, unsafe_hash=True)(cls)


MATRIX_ROWS = 60
MATRIX_COLS = 7
MATRIX_SHAPE = (MATRIX_ROWS, MATRIX_COLS)
FEATURE_NAMES: tuple[str, ...] = (
    "fvg_bullish_active",
    "fvg_bearish_active",
    "fvg_nearest_level",
    "fvg_age",
    "fvg_mitigation_signal",
    "price_momentum_5",
    "volume_ratio",
)


class SynergyType(StrEnum):
    TYPE_1 = "TYPE_1"
    TYPE_2 = "TYPE_2"
    TYPE_3 = "TYPE_3"
    TYPE_4 = "TYPE_4"
    MANUAL = "manual"


class EventOutcome(StrEnum):
    """What became of one event handled: the `outcome` label of tactical_events_processed_total."""

    EXECUTED = "executed"
    HOLD = "hold"
    DEAD_LETTER = "dead_letter"
    DUPLICATE = "duplicate"


@per_event_record
class SynergyEvent:
    """A validated SYNERGY_DETECTED event. `matrix` is (60, 7) float32, one row per 5-minute bar, oldest first."""

    correlation_id: str
    synergy_type: SynergyType
    direction: int  # 1 long, -1 short
    confidence: float
    symbol: str
    timestamp: str  # bar close, ISO-8601 UTC, as sent
    price: float
    atr: float
    matrix: np.ndarray = field(repr=False, compare=False)


@per_event_record
class AgentVote:
    """One agent's output for one event: probabilities in ACTION_ORDER and its confidence."""

    agent: str
    probabilities: tuple[float, float, float]
    confidence: float

    @property
    def action(self) -> Action:
        # np.argmax's answer (first of equal maxima, NaN counts as the maximum) at a tenth of its cost: called per
        # agent per event by the accuracy tracker.
        p = self.probabilities
        if p[0] == p[0] and p[1] == p[1] and p[2] == p[2]:
            best = 0 if p[0] >= p[1] else 1
            return Action.from_index(best if p[best] >= p[2] else 2)
        return Action.from_index(int(np.argmax(p)))


@per_event_record
class ExecutionCommand:
    correlation_id: str
    symbol: str
    side: str  # "BUY" or "SELL"
    quantity: int
    price: float
    stop_loss: float
    take_profit: float
    model_version: str
    order_type: str = "MARKET"
    time_in_force: str = "IOC"


@per_event_record
class Decision:
    """What the aggregator decided for one event, and why."""

    correlation_id: str
    synergy_type: SynergyType
    direction: int
    action: Action
    score: float  # score of `action`
    scores: tuple[float, float, float]  # per action, in ACTION_ORDER
    execute: bool
    reason: str
    votes: tuple[AgentVote, ...]
    command: ExecutionCommand | None = None


def _num(value: float) -> str:
    # repr is the shortest text that reads back as the same float: prices survive exactly.
    return repr(float(value))


_FLOAT32 = "%.9g"  # the fewest significant digits that tell every float32 from its neighbours
_FLOAT32_VOTE = f"{_FLOAT32},{_FLOAT32},{_FLOAT32}"
_SCORE_KEYS = tuple(f"score_{name}" for name in ACTION_ORDER)
_VOTE_KEYS = {agent: f"vote_{agent}" for agent in AGENT_NAMES}
_CONFIDENCE_KEYS = {agent: f"confidence_{agent}" for agent in AGENT_NAMES}


def timing_fields(timings_ms: Mapping[str, float]) -> dict[str, str]:
    """`{stage}_ms` fields, shared by every decision and command of a batch: formatted once per batch."""
    return {f"{stage}_ms": _num(ms) for stage, ms in timings_ms.items()}


def decision_fields(decision: Decision, event_id: bytes | None = None) -> dict[str, str | bytes]:
    """Flat stream fields of a decision: no JSON, `correlation_id` top-level so tools can scan and join.
    `event_id` is the input entry the decision answers. What a whole batch shares — `model_version` and the
    `timing_fields` — is added by the commit, sent once per batch."""
    fields: dict[str, str | bytes] = {
        "correlation_id": decision.correlation_id,
        "synergy_type": decision.synergy_type.value,
        "direction": str(decision.direction),
        "action": decision.action.label,
        "score": repr(float(decision.score)),
        "execute": "1" if decision.execute else "0",
        "reason": decision.reason,
    }
    # repr(float(x)) inline rather than _num, on the hot path. The scores are float64 sums, written exactly.
    for key, score in zip(_SCORE_KEYS, decision.scores, strict=True):
        fields[key] = repr(float(score))
    # The agents' outputs are float32 (`AgentEnsemble.infer`): 9 significant digits read back as the same float32, in
    # a third of repr's time (~1 against ~3 µs a vote here) and ~7 characters shorter per number than the float64
    # repr of a float32 — 12 numbers a decision.
    for vote in decision.votes:
        fields[_VOTE_KEYS[vote.agent]] = _FLOAT32_VOTE % vote.probabilities
        fields[_CONFIDENCE_KEYS[vote.agent]] = _FLOAT32 % vote.confidence
    if event_id is not None:
        fields["event_id"] = event_id
    return fields


def command_fields(command: ExecutionCommand) -> dict[str, str]:
    """Flat stream fields of an execution command; the batch's `timing_fields` are added by the commit."""
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


__all__ = [
    "AGENT_NAMES",
    "FEATURE_NAMES",
    "MATRIX_SHAPE",
    "AgentVote",
    "Decision",
    "EventOutcome",
    "ExecutionCommand",
    "SynergyEvent",
    "SynergyType",
    "command_fields",
    "decision_fields",
    "timing_fields",
]
