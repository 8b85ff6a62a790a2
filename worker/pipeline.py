"""The hot path, one batch at a time: validate → claim → infer → aggregate → commit."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import redis

from worker.aggregator import AggregatorConfig, aggregate_batch
from worker.delivery import (
    ClaimOutcome,
    DeadLetter,
    DecidedEvent,
    DeliveryScripts,
    dead_letter_fields,
)
from worker.events import InvalidEvent, decode_event
from worker.inference import AgentEnsemble
from worker.records import Decision, SynergyEvent, command_fields, decision_fields


class StageError(RuntimeError):
    """A batch failed in `stage`; its entries stay pending and are retried (then dead-lettered) later."""

    def __init__(self, stage: str, cause: BaseException) -> None:
        super().__init__(f"{stage} failed: {type(cause).__name__}: {cause}")
        self.stage = stage


@dataclass(frozen=True, slots=True)
class StreamEntry:
    entry_id: bytes
    fields: Mapping[bytes, bytes]
    delivery_count: int = 1


@dataclass(frozen=True, slots=True)
class PipelineConfig:
    consumer: str
    processing_lease_ms: int
    completed_ttl_s: int
    max_deliveries: int
    max_event_bytes: int


@dataclass(slots=True)
class BatchResult:
    """What one batch did, for metrics, health and the live view."""

    read: int = 0
    decisions: list[Decision] = field(default_factory=list)  # committed by this worker
    events: list[SynergyEvent] = field(default_factory=list)  # the events of `decisions`, same order
    duplicates: int = 0
    dead_letters: list[str] = field(default_factory=list)  # reasons
    stage_seconds: dict[str, float] = field(default_factory=dict)
    service_seconds: float = 0.0  # batch read → committed

    @property
    def executed(self) -> int:
        return sum(1 for d in self.decisions if d.execute)


class EventPipeline:
    def __init__(
        self,
        scripts: DeliveryScripts,
        ensemble: AgentEnsemble,
        aggregator: AggregatorConfig,
        config: PipelineConfig,
    ) -> None:
        self.scripts = scripts
        self.ensemble = ensemble
        self.aggregator = aggregator
        self.config = config
        self._stage = "validate"

    def process(self, entries: Sequence[StreamEntry]) -> BatchResult:
        """Decide a batch. Redis errors propagate as they are (the caller reconnects); anything else becomes a
        StageError naming the stage. Either way nothing was acked that was not committed."""
        try:
            return self._process(entries)
        except (redis.ConnectionError, redis.TimeoutError):
            raise
        except Exception as exc:
            raise StageError(self._stage, exc) from exc

    def _process(self, entries: Sequence[StreamEntry]) -> BatchResult:
        clock = time.perf_counter
        result = BatchResult(read=len(entries))
        started = clock()

        self._stage = "validate"
        events, entry_ids, dead = self._validate(entries)
        validated = clock()

        # The claim runs in Redis while the agents run here: its outcome is needed only to commit. A duplicate is
        # thus decided in vain, never committed; duplicates are rare, the claim's round trip was every batch's.
        self._stage = "claim"
        with self.scripts.send_claim(
            self.config.consumer,
            self.config.processing_lease_ms,
            [(event.correlation_id, entry_id) for event, entry_id in zip(events, entry_ids, strict=True)],
        ) as claim:
            sent = clock()
            self._stage = "inference"
            ensemble = self.ensemble  # one bundle per batch, even if a reload swaps it meanwhile
            decisions: list[Decision] = []
            if events:
                probabilities, confidence = ensemble.infer(np.stack([event.matrix for event in events]))
                inferred = clock()
                self._stage = "aggregate"
                decisions = aggregate_batch(events, probabilities, confidence, self.aggregator, ensemble.version)
            else:
                inferred = clock()
            aggregated = clock()
            self._stage = "claim"
            outcomes = claim.outcomes()
        claimed = clock()
        acks = [entry_id for entry_id, outcome in zip(entry_ids, outcomes, strict=True) if outcome.is_duplicate]
        todo = [i for i, outcome in enumerate(outcomes) if not outcome.is_duplicate]
        if len(todo) < len(events):
            events = [events[i] for i in todo]
            entry_ids = [entry_ids[i] for i in todo]
            decisions = [decisions[i] for i in todo]

        timings_ms = {
            "validate": (validated - started) * 1e3,
            "claim": (sent - validated + claimed - aggregated) * 1e3,  # what the overlap did not hide
            "inference": (inferred - sent) * 1e3,
            "aggregate": (aggregated - inferred) * 1e3,
        }
        decided = [
            DecidedEvent(
                entry_id=entry_id,
                correlation_id=decision.correlation_id,
                decision_fields={**decision_fields(decision, ensemble.version, timings_ms), "event_id": entry_id},
                command_fields=command_fields(decision.command, timings_ms) if decision.command else None,
            )
            for entry_id, decision in zip(entry_ids, decisions, strict=True)
        ]
        self._stage = "commit"
        committed = self.scripts.commit(decided, acks, dead, self.config.completed_ttl_s)
        finished = clock()

        result.duplicates = len(acks)
        decided_outcomes, dead_outcomes = committed[: len(decided)], committed[len(decided) :]
        for decision, event, outcome in zip(decisions, events, decided_outcomes, strict=True):
            if outcome == "committed":
                result.decisions.append(decision)
                result.events.append(event)
            else:  # 'duplicate' or 'settled': another hand decided its fate
                result.duplicates += 1
        for letter, outcome in zip(dead, dead_outcomes, strict=True):
            if outcome == "dead_lettered":
                result.dead_letters.append(str(letter.fields["dead_reason"]))
            else:
                result.duplicates += 1
        result.stage_seconds = {
            "validate": validated - started,
            "claim": sent - validated + claimed - aggregated,
            "inference": inferred - sent,
            "aggregate": aggregated - inferred,
            "commit": finished - claimed,
        }
        result.service_seconds = finished - started
        return result

    def _validate(
        self, entries: Sequence[StreamEntry]
    ) -> tuple[list[SynergyEvent], list[bytes], list[DeadLetter]]:
        events: list[SynergyEvent] = []
        entry_ids: list[bytes] = []
        dead: list[DeadLetter] = []
        for entry in entries:
            if entry.delivery_count > self.config.max_deliveries:
                reason = f"max_deliveries: delivered {entry.delivery_count} times (limit {self.config.max_deliveries})"
                dead.append(self._dead_letter(entry, reason))
                continue
            try:
                event = decode_event(entry.fields, max_event_bytes=self.config.max_event_bytes)
            except InvalidEvent as exc:
                dead.append(self._dead_letter(entry, str(exc)))
                continue
            events.append(event)
            entry_ids.append(entry.entry_id)
        return events, entry_ids, dead

    def _dead_letter(self, entry: StreamEntry, reason: str) -> DeadLetter:
        return DeadLetter(
            entry_id=entry.entry_id,
            fields=dead_letter_fields(
                entry.fields,
                reason=reason,
                delivery_count=entry.delivery_count,
                entry_id=entry.entry_id,
                consumer=self.config.consumer,
            ),
        )


__all__ = ["BatchResult", "ClaimOutcome", "EventPipeline", "PipelineConfig", "StreamEntry"]
