"""What the worker measures after each batch: metrics, the rolling window, positions and agent accuracy.

Called from the main loop after batches commit, off the hot path proper; short batches are held and recorded
together (`Worker.hold_for_recording`), since most of a batch's recording cost is fixed.
`end_to_end` is the worker's own time for an event: from the XREADGROUP reply to the committed decision
(queueing before that is what consumer lag measures). Each stage's time is observed once per decided event too, so
a stage's quantiles describe the same events as end_to_end's (`TacticalMetrics.observe_stages`). Per-agent
inference time is probed separately (`HealthMonitor`), because the hot path runs the three agents as one fused call.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from worker.accuracy import AgentAccuracy
from worker.metrics import TacticalMetrics
from worker.pipeline import BatchResult
from worker.positions import PositionBook, bar_time
from worker.records import AgentVote, EventOutcome, ExecutionCommand, SynergyEvent
from worker.rolling import RollingWindow, WindowStats


class Telemetry:
    def __init__(self, metrics: TacticalMetrics | None = None, window_s: float = 60.0) -> None:
        self.metrics = metrics or TacticalMetrics()
        self.window = RollingWindow(window_s)
        self.positions = PositionBook()
        self.accuracy = AgentAccuracy()
        self._book_lock = threading.Lock()  # the monitor thread reads positions and accuracy

    def record_batch(self, result: BatchResult) -> None:
        self.record_batches((result,))

    def record_batches(self, results: Sequence[BatchResult]) -> None:
        """Batches in the order they were committed, recorded as one: the same metrics, window and books as recording
        each in turn (a histogram's sum to the last bit, where two batches took the very same time), for one pass's
        fixed costs (a batch of one event costs ~80 µs to record, mostly fixed)."""
        latencies: list[float] = []
        synergy_types: list[str] = []
        outcomes: list[str] = []
        confidences: list[float] = []
        events: list[SynergyEvent] = []
        votes: list[tuple[AgentVote, ...]] = []
        commands: list[ExecutionCommand | None] = []
        for result in results:
            decisions = result.decisions
            latencies += [result.service_seconds] * len(decisions)
            synergy_types += [decision.synergy_type.value for decision in decisions]
            outcomes += [EventOutcome.EXECUTED if d.execute else EventOutcome.HOLD for d in decisions]
            outcomes += [EventOutcome.DUPLICATE] * result.duplicates
            outcomes += [EventOutcome.DEAD_LETTER] * len(result.dead_letters)
            confidences += [vote.confidence for decision in decisions for vote in decision.votes]
            events += result.events
            votes += [decision.votes for decision in decisions]
            commands += [decision.command for decision in decisions]

        self.metrics.observe_events(latencies, synergy_types, outcomes)
        for result in results:
            self.metrics.observe_stages(result.stage_seconds, len(result.decisions))
        self.window.record_events(outcomes, latencies, confidences)
        for result in results:
            if result.dead_letters:
                self.record_error("validate", len(result.dead_letters), handled=True)
            for failed in result.failed:  # left pending, no outcome yet: an attempt that failed
                self.record_error(failed.stage)
            if result.batch_error is not None:  # its events have outcomes: one failed pass over the batch
                self.record_error("batch", handled=True)

        bar_closes = [bar_time(event.timestamp) for event in events]  # parsed once, not by each book
        with self._book_lock:
            for event, command, when in zip(events, commands, bar_closes, strict=True):
                # Each event's price first closes what it triggers, then its own position opens.
                self.positions.mark(event.symbol, event.price, when)
                if command is not None:
                    self.positions.open(command, when)
            # The same for the calls (the two books share nothing), over all the batches at once.
            self.accuracy.observe_and_record_batch(events, votes, bar_closes)

    def record_error(self, operation: str, count: int = 1, *, handled: bool = False) -> None:
        """`count` failures of `operation`; `handled` as `RollingWindow.record_error`."""
        self.metrics.record_error(operation, count)
        self.window.record_error(operation, count, handled=handled)

    def publish(self) -> WindowStats:
        """Refresh the gauges that summarise the window and the books (the monitor calls this every tick)."""
        stats = self.window.snapshot()
        self.metrics.publish_window(stats)
        with self._book_lock:
            active = self.positions.active_count()
            accuracy = self.accuracy.accuracy()
        self.metrics.set_active_positions(active)
        for agent, value in accuracy.items():
            self.metrics.set_agent_accuracy(agent, value)
        return stats

    def books(self) -> dict[str, object]:
        with self._book_lock:
            return {
                "positions": {"active": self.positions.active_count(), "realised_pnl": self.positions.realised_pnl},
                "agent_accuracy": self.accuracy.accuracy(),
            }
