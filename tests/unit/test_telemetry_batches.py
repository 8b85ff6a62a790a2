"""Committed batches recorded together leave exactly what recording them one by one leaves — metrics, the rolling
window, positions and agent accuracy — and the worker holds short batches back for at most `RECORD_HOLD_S`."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worker import service
from worker.accuracy import AgentAccuracy
from worker.actions import AGENT_NAMES, Action
from worker.aggregator import AggregatorConfig, aggregate
from worker.delivery import DeadLetter
from worker.pipeline import BatchResult, FailedEvent, StreamEntry
from worker.records import AgentVote, SynergyEvent, SynergyType
from worker.rolling import RollingWindow
from worker.service import RECORD_HOLD_S, Worker
from worker.settings import WorkerSettings
from worker.telemetry import Telemetry

T0 = datetime(2024, 3, 1, 14, 30, tzinfo=UTC)
PROBABILITIES = {Action.SHORT: (0.8, 0.1, 0.1), Action.HOLD: (0.2, 0.6, 0.2), Action.LONG: (0.1, 0.1, 0.8)}
STAGES = ("read", "validate", "claim", "inference", "aggregate", "commit")


def event(index: int, symbol: str, bar: int, price: float) -> SynergyEvent:
    return SynergyEvent(correlation_id=f"c{index}", synergy_type=SynergyType.TYPE_1, direction=1, confidence=0.8,
                        symbol=symbol, timestamp=(T0 + bar * timedelta(minutes=5)).isoformat(), price=price, atr=2.0,
                        matrix=np.zeros((60, 7), dtype=np.float32))


def votes(actions: tuple[Action, Action, Action]) -> tuple[AgentVote, ...]:
    return tuple(AgentVote(agent, PROBABILITIES[action], 0.9) for agent, action in zip(AGENT_NAMES, actions,
                                                                                        strict=True))


def telemetry(max_pending: int, per_symbol: int) -> Telemetry:
    recorder = Telemetry()
    recorder.window = RollingWindow(60.0, clock=lambda: 1000.0)  # both in one slot, whatever the wall clock does
    recorder.accuracy = AgentAccuracy(max_pending=max_pending, max_pending_per_symbol=per_symbol, window=7)
    return recorder


def recorded(recorder: Telemetry) -> object:
    """Everything a recording leaves, as the worker shows it."""
    return (
        recorder.metrics.render()[0],
        recorder.window.snapshot(),
        recorder.books(),
        recorder.positions.open_positions(),
        recorder.accuracy.resolved_counts(),
        recorder.accuracy.pending_count(),
        recorder.accuracy.dropped,
        {symbol: recorder.accuracy.pending_count(symbol) for symbol in ("ES", "NQ", "CL")},
    )


action = st.sampled_from(list(Action))
decided = st.tuples(st.sampled_from(["ES", "NQ", "CL"]), st.integers(min_value=-4, max_value=8),
                    st.floats(min_value=95.0, max_value=105.0), st.tuples(action, action, action))
batch = st.tuples(
    st.lists(decided, max_size=6),
    st.integers(min_value=0, max_value=2),  # duplicates
    st.integers(min_value=0, max_value=2),  # dead letters
    st.lists(st.sampled_from(["inference", "aggregate"]), max_size=1),  # events that failed even alone
    st.booleans(),  # decided one at a time after the batch failed
    # Stage and service times as multiples of 1/1024 s: sums of them are exact, whatever the order of adding.
    st.integers(min_value=1, max_value=200),
)


@settings(max_examples=150, deadline=None)
@given(batches=st.lists(batch, min_size=1, max_size=8), caps=st.sampled_from([(100_000, 1000), (8, 4), (3, 1)]))
def test_batches_recorded_together_leave_what_recording_each_leaves(batches, caps) -> None:
    config, bars, index, results = AggregatorConfig(), {"ES": 0, "NQ": 0, "CL": 0}, 0, []
    for steps, duplicates, dead, failed, fell_back, ticks in batches:
        events, decisions = [], []
        for symbol, forward, price, actions in steps:
            bars[symbol] += forward
            events.append(event(index, symbol, bars[symbol], price))
            decisions.append(aggregate(events[-1], votes(actions), config, "v1"))
            index += 1
        results.append(BatchResult(
            read=len(events) + duplicates + dead + len(failed), decisions=decisions, events=events,
            duplicates=duplicates,
            dead_letters=[DeadLetter(b"1-%d" % i, {"dead_reason": "bad"}) for i in range(dead)],
            failed=[FailedEvent(f"f{i}", b"2-%d" % i, stage, "boom") for i, stage in enumerate(failed)],
            batch_error="inference failed" if fell_back else None,
            stage_seconds={stage: ticks * (k + 1) / 1024 for k, stage in enumerate(STAGES)},
            service_seconds=ticks / 1024,
        ))
    one_by_one, together = telemetry(*caps), telemetry(*caps)
    for result in results:
        one_by_one.record_batch(result)
    together.record_batches(results)

    assert recorded(together) == recorded(one_by_one)


def worker(monkeypatch: pytest.MonkeyPatch, now: list[float],
           on_batch: Callable[[BatchResult], None] | None = None) -> Worker:
    monkeypatch.setattr(service.time, "monotonic", lambda: now[0])
    return Worker(WorkerSettings.from_env({}, redis_url="redis://127.0.0.1:1/0", consumer="w", batch_size=10),
                  on_batch=on_batch)


def handled(recorder: Telemetry) -> int:
    return recorder.window.snapshot().events


def test_short_batches_are_recorded_together_once_the_first_has_waited_the_hold(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [100.0]
    held = worker(monkeypatch, now)

    held.record_results([BatchResult(read=1, duplicates=1)])
    now[0] += RECORD_HOLD_S / 2
    held.record_results([BatchResult(read=1, duplicates=1)])
    assert handled(held.telemetry) == 0
    assert held._batches_settled == 2  # the breaker and the backoff hear of each commit at once

    now[0] += RECORD_HOLD_S  # the first has now waited longer than the hold
    held.record_results([BatchResult(read=1, duplicates=1)])
    assert handled(held.telemetry) == 3


def test_a_full_batch_worth_of_events_is_recorded_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [100.0]
    held = worker(monkeypatch, now)

    held.record_results([BatchResult(read=4, duplicates=4), BatchResult(read=5, duplicates=5)])
    assert handled(held.telemetry) == 0
    held.record_results([BatchResult(read=1, duplicates=1)])  # 10 events: the batch size
    assert handled(held.telemetry) == 10


def test_what_is_held_is_recorded_on_the_way_out(monkeypatch: pytest.MonkeyPatch) -> None:
    held = worker(monkeypatch, [100.0])

    held.record_results([BatchResult(read=1, duplicates=1)])
    held.shutdown()

    assert handled(held.telemetry) == 1


def test_what_is_held_is_recorded_before_the_worker_sleeps(monkeypatch: pytest.MonkeyPatch) -> None:
    held = worker(monkeypatch, [100.0])

    held.record_results([BatchResult(read=1, duplicates=1)])
    held.sleep(0)  # a backoff after a Redis failure, an open breaker

    assert handled(held.telemetry) == 1


def test_on_batch_hears_of_a_batch_once_it_is_recorded(monkeypatch: pytest.MonkeyPatch) -> None:
    now, recorded_when_heard = [100.0], []
    held = worker(monkeypatch, now, on_batch=lambda result: recorded_when_heard.append(handled(held.telemetry)))

    held.record_results([BatchResult(read=1, duplicates=1)])
    assert recorded_when_heard == []
    now[0] += 2 * RECORD_HOLD_S
    held.record_results([BatchResult(read=1, duplicates=1)])

    assert recorded_when_heard == [2, 2]


class DecidesStartToFinish:
    """Stands in for the pipeline of `Worker.process` (a reclaim): nothing in flight, the batch decided and committed
    before it returns."""

    commit_in_flight = False

    def drain(self) -> list[BatchResult]:
        return []

    def process(self, entries: list[StreamEntry]) -> BatchResult:
        return BatchResult(read=len(entries), duplicates=len(entries))


def test_a_batch_decided_start_to_finish_is_recorded_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    held = worker(monkeypatch, [100.0])
    held.pipeline = DecidesStartToFinish()  # type: ignore[assignment]

    held.process([StreamEntry(b"1-1", {b"event_type": b"SYNERGY_DETECTED"}, 2)])

    # No commit is left in flight to end the next read early: that read may wait the whole block_ms.
    assert handled(held.telemetry) == 1
