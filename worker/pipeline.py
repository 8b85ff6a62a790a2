"""The hot path, one batch at a time: validate → claim → infer → aggregate → commit."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import redis

from worker.aggregator import AggregatorConfig, aggregate_batch
from worker.decision_entry import command_fields, decision_fields, timing_fields
from worker.delivery import (
    DeadLetter,
    DecidedEvent,
    DeliveryScripts,
    PendingClaim,
    PendingCommit,
    SharedFields,
    dead_letter_fields,
)
from worker.events import InvalidEvent, decode_events, wire_correlation_id
from worker.inference import AgentEnsemble
from worker.records import Decision, SynergyEvent, per_event_record


class StageError(RuntimeError):
    """A batch of `events` entries failed in `stage`; its entries stay pending and are retried (then dead-lettered)
    later. Each counts as an error: the error rate is per event, not per batch."""

    def __init__(self, stage: str, cause: BaseException, events: int = 1) -> None:
        super().__init__(f"{stage} failed: {type(cause).__name__}: {cause}")
        self.stage = stage
        self.events = max(1, events)


@dataclass(frozen=True, slots=True)
class FailedEvent:
    """An event the agents could not decide even alone, in a batch whose other events were decided: it stays
    pending and is retried (then dead-lettered after max_deliveries), without holding the others back."""

    correlation_id: str
    entry_id: bytes
    stage: str  # "inference" or "aggregate"
    reason: str


@per_event_record
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
    dead_letters: list[DeadLetter] = field(default_factory=list)  # written to the dead-letter stream by this worker
    failed: list[FailedEvent] = field(default_factory=list)  # left pending: see FailedEvent
    batch_error: str | None = None  # the batch failed as a whole, and its events were decided one at a time
    stage_seconds: dict[str, float] = field(default_factory=dict)
    # The worker's own time on the batch, read → committed; time its commit waited in flight while the next batch
    # was decided is not counted (that is the next batch's time).
    service_seconds: float = 0.0

    @property
    def executed(self) -> int:
        return sum(1 for d in self.decisions if d.execute)

    @property
    def dead_reasons(self) -> list[str]:
        return [letter.reason for letter in self.dead_letters]


@dataclass(slots=True)
class _Decided:
    """A batch decided but not yet committed."""

    result: BatchResult
    events: list[SynergyEvent]
    decisions: list[Decision]
    decided: list[DecidedEvent]
    shared: SharedFields
    dead: list[DeadLetter]
    claim: PendingClaim  # sent, its reply not read yet
    started: float
    decided_at: float


@dataclass(slots=True)
class _InFlight:
    """A batch whose commit was sent and whose reply is not read yet."""

    batch: _Decided
    commit: PendingCommit
    sent_at: float


class EventPipeline:
    """Decides batches and commits them. `process` does one batch start to finish. `submit` lets the next batch be
    decided while Redis runs the previous one's commit: it decides its batch, then reads the reply of the commit in
    flight, then sends its own; `drain` reads the last one. At most one commit is in flight, so each reply is read
    before the next commit goes out on the same connection."""

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
        self._in_flight: _InFlight | None = None
        self._unreported: list[BatchResult] = []  # settled by a submit that then failed: the next drain's

    @property
    def commit_in_flight(self) -> bool:
        return self._in_flight is not None

    @property
    def commit_reply_arrived(self) -> bool:
        """A commit is in flight and its reply is there to read without waiting."""
        return self._in_flight is not None and self._in_flight.commit.arrived

    @property
    def stage(self) -> str:
        """Where the last `submit` got to: after a Redis error, what Redis failed or refused (the claim, or a commit:
        this batch's or the reply of the one in flight)."""
        return self._stage

    def process(self, entries: Sequence[StreamEntry]) -> BatchResult:
        """Decide and commit a batch (after finishing any commit in flight). Redis errors propagate as they are (the
        caller reconnects); anything else becomes a StageError naming the stage. Either way nothing was acked that
        was not committed."""
        finished = self.drain()
        assert not finished, "process() after submit(): drain() the batch in flight first, its result is yours"
        self.submit(entries)
        return self.drain()[0]

    def submit(
        self, entries: Sequence[StreamEntry], *, before_commit: Callable[[], None] | None = None
    ) -> list[BatchResult]:
        """Decide a batch and send its commit without waiting for the reply. Returns the result of the batch whose
        commit was in flight before (read after this batch was decided), if any. `before_commit` runs once the batch
        is decided, that earlier commit's reply read, and before this batch's commit goes out: the worker sends the
        read of its next batch there (sent after the commit, that read would wait for the commit to run). Errors as
        `process`; a batch that fails before its commit leaves the earlier commit in flight for `drain`."""
        try:
            batch = self._decide(entries)
            with batch.claim:
                self._stage = "commit"
                # Read and settled: if this submit fails from here on, the next drain returns them.
                self._unreported = self.drain()
                if before_commit is not None:
                    self._stage = "read"
                    before_commit()
                    self._stage = "commit"
                commit = self.scripts.send_commit(batch.decided, batch.dead, self.config.completed_ttl_s, batch.shared)
                self._in_flight = _InFlight(batch, commit, time.perf_counter())
                # The claim's reply came long ago; it is read only to keep its connection in step. The commit just
                # sent re-checks, atomically, everything the claim found (DESIGN.md, "Delivery"), so a claim Redis had
                # lost (NOSCRIPT) is not run again: run after its commit, it would leave a lease behind.
                self._stage = "claim"
                batch.claim.settle()
            finished, self._unreported = self._unreported, []
            return finished
        except (redis.ConnectionError, redis.TimeoutError):
            self.abandon()
            raise
        except redis.RedisError:
            # Redis answered but refused (read-only, out of memory, not permitted, a key of another type): not this
            # batch's fault, and not counted against its events. A commit already sent stays in flight for drain.
            raise
        except Exception as exc:
            raise StageError(self._stage, exc, len(entries)) from exc

    def drain(self) -> list[BatchResult]:
        """Read the reply of the commit in flight, if any: its batch's result. A Redis error abandons it (its entries
        are committed or still pending; either way nothing is lost or doubled) and propagates."""
        unreported, self._unreported = self._unreported, []
        in_flight, self._in_flight = self._in_flight, None
        if in_flight is None:
            return unreported
        waiting_since = time.perf_counter()
        try:
            outcomes = in_flight.commit.outcomes()
        except BaseException:
            in_flight.commit.close()
            self._unreported = unreported  # still settled: returned by the next drain
            raise
        # The worker's own time on the commit: building and sending it, then waiting for its reply. Time spent
        # deciding the next batch meanwhile is that batch's, not this one's (end-to-end latency stays per event).
        commit_seconds = in_flight.sent_at - in_flight.batch.decided_at + time.perf_counter() - waiting_since
        return [*unreported, self._settle(in_flight.batch, outcomes, commit_seconds)]

    def abandon(self) -> None:
        """Forget the commit in flight without reading its reply (the connection is closed): after a Redis error."""
        in_flight, self._in_flight = self._in_flight, None
        if in_flight is not None:
            in_flight.commit.close()

    def _decide(self, entries: Sequence[StreamEntry]) -> _Decided:
        clock = time.perf_counter
        result = BatchResult(read=len(entries))
        started = clock()

        self._stage = "validate"
        events, entry_ids, dead, matrices = self._validate(entries)
        validated = clock()

        # The claim (the lease that shows other consumers this event is in flight) runs in Redis while the agents run
        # here. Nothing waits for its reply: the commit re-checks the lease and the completed key itself, so a
        # duplicate is decided in vain and acked by the commit, never written twice.
        self._stage = "claim"
        claim = self.scripts.send_claim(
            self.config.consumer,
            self.config.processing_lease_ms,
            [(event.correlation_id, entry_id) for event, entry_id in zip(events, entry_ids, strict=True)],
        )
        try:
            sent = clock()
            self._stage = "inference"
            ensemble = self.ensemble  # one bundle per batch, even if a reload swaps it meanwhile
            decisions: list[Decision] = []
            if events:
                try:
                    probabilities, confidence = ensemble.infer(matrices)
                    inferred = clock()
                    self._stage = "aggregate"
                    decisions = aggregate_batch(events, probabilities, confidence, self.aggregator, ensemble.version)
                except Exception as exc:
                    result.batch_error = f"{self._stage} failed: {type(exc).__name__}: {exc}"
                    events, entry_ids, decisions, result.failed = self._decide_alone(ensemble, events, entry_ids, exc)
                    inferred = clock()
            else:
                inferred = clock()
            aggregated = clock()

            result.stage_seconds = {
                "validate": validated - started,
                "claim": sent - validated,
                "inference": inferred - sent,
                "aggregate": aggregated - inferred,
            }
            timings = timing_fields({stage: seconds * 1e3 for stage, seconds in result.stage_seconds.items()})
            decided = [
                DecidedEvent(
                    entry_id=entry_id,
                    correlation_id=decision.correlation_id,
                    decision_fields=decision_fields(decision, entry_id),
                    command_fields=command_fields(decision.command) if decision.command else None,
                )
                for entry_id, decision in zip(entry_ids, decisions, strict=True)
            ]
        except BaseException:
            claim.close()
            raise
        shared = SharedFields(decision={"model_version": ensemble.version, **timings}, command=timings)
        return _Decided(result, events, decisions, decided, shared, dead, claim, started, aggregated)

    def _decide_alone(
        self, ensemble: AgentEnsemble, events: list[SynergyEvent], entry_ids: list[bytes], batch_error: Exception
    ) -> tuple[list[SynergyEvent], list[bytes], list[Decision], list[FailedEvent]]:
        """The batch failed as a whole: decide each event alone (the decision it would get in the batch: an event's
        probabilities do not depend on its batch), so one event the agents cannot decide does not take the others
        to max_deliveries with it, and a failure that does not repeat costs nothing (an event alone in its batch is
        tried once more). When no event can be decided alone, the model is at fault, not an event: the batch's error
        is raised as it was (a breaker failure; its events wait in the stream). Alone, an event the agents cannot
        decide is not told from a broken model: telling them apart by another event the agents still decide would
        let a model broken on part of its inputs dead-letter real traffic instead of opening the breaker."""
        failed_stage = self._stage
        kept_events: list[SynergyEvent] = []
        kept_ids: list[bytes] = []
        decisions: list[Decision] = []
        failed: list[FailedEvent] = []
        for event, entry_id in zip(events, entry_ids, strict=True):
            stage = "inference"
            try:
                probabilities, confidence = ensemble.infer(event.matrix[np.newaxis])
                stage = "aggregate"
                decisions += aggregate_batch([event], probabilities, confidence, self.aggregator, ensemble.version)
            except Exception as exc:
                failed.append(FailedEvent(event.correlation_id, entry_id, stage, f"{type(exc).__name__}: {exc}"))
                continue
            kept_events.append(event)
            kept_ids.append(entry_id)
        if not decisions:
            self._stage = failed_stage
            raise batch_error
        return kept_events, kept_ids, decisions, failed

    def _settle(self, batch: _Decided, committed: list[str], commit_seconds: float) -> BatchResult:
        """Fill in a batch's result from its commit's outcomes."""
        result = batch.result
        decided_outcomes, dead_outcomes = committed[: len(batch.decided)], committed[len(batch.decided) :]
        for decision, event, outcome in zip(batch.decisions, batch.events, decided_outcomes, strict=True):
            if outcome == "committed":
                result.decisions.append(decision)
                result.events.append(event)
            else:  # 'duplicate' or 'settled': another hand decided its fate
                result.duplicates += 1
        for letter, outcome in zip(batch.dead, dead_outcomes, strict=True):
            if outcome == "dead_lettered":
                result.dead_letters.append(letter)
            else:
                result.duplicates += 1
        result.stage_seconds["commit"] = commit_seconds
        result.service_seconds = batch.decided_at - batch.started + commit_seconds
        return result

    def _validate(
        self, entries: Sequence[StreamEntry]
    ) -> tuple[list[SynergyEvent], list[bytes], list[DeadLetter], np.ndarray]:
        """The batch's valid events with their entry ids and their matrices stacked (the agents' input), and a dead
        letter for each other entry, in the entries' order."""
        limit = self.config.max_deliveries
        fresh = [entry for entry in entries if entry.delivery_count <= limit]
        decoded, matrices = decode_events([entry.fields for entry in fresh],
                                          max_event_bytes=self.config.max_event_bytes)
        outcomes = iter(decoded)
        events: list[SynergyEvent] = []
        entry_ids: list[bytes] = []
        dead: list[DeadLetter] = []
        for entry in entries:
            if entry.delivery_count > limit:
                reason = f"max_deliveries: delivered {entry.delivery_count} times (limit {limit})"
                dead.append(self._dead_letter(entry, reason))
                continue
            event = next(outcomes)
            if isinstance(event, InvalidEvent):
                dead.append(self._dead_letter(entry, str(event)))
                continue
            events.append(event)
            entry_ids.append(entry.entry_id)
        return events, entry_ids, dead, matrices

    def _dead_letter(self, entry: StreamEntry, reason: str) -> DeadLetter:
        return DeadLetter(
            entry_id=entry.entry_id,
            correlation_id=wire_correlation_id(entry.fields),
            fields=dead_letter_fields(
                entry.fields,
                reason=reason,
                delivery_count=entry.delivery_count,
                entry_id=entry.entry_id,
                consumer=self.config.consumer,
            ),
        )


__all__ = ["BatchResult", "EventPipeline", "FailedEvent", "PipelineConfig", "StreamEntry"]
