"""Committed batches recorded together leave exactly what recording them one by one leaves — metrics, the rolling
window, positions and agent accuracy — and the worker holds short batches back for at most `RECORD_HOLD_S`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worker import service
from worker.actions import AGENT_NAMES, Action
from worker.aggregator import AggregatorConfig, aggregate
from worker.delivery import DeadLetter
from worker.pipeline import BatchResult, FailedEvent
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


def telemetry() -> Telemetry:
    recorder = Telemetry()
    recorder.window = RollingWindow(60.0, clock=lambda: 1000.0)  # both in one slot, whatever the wall clock does
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
    )


action = st.sampled_from(list(Action))
decided = st.tuples(st.sampled_from(["ES", "NQ"]), st.integers(min_value=-2, max_value=8),
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
@given(batches=st.lists(batch, min_size=1, max_size=8))
def test_batches_recorded_together_leave_what_recording_each_leaves(batches) -> None:
    config, bars, index, results = AggregatorConfig(), {"ES": 0, "NQ": 0}, 0, []
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
    one_by_one, together = telemetry(), telemetry()
    for result in results:
        one_by_one.record_batch(result)
    together.record_batches(results)

    assert recorded(together) == recorded(one_by_one)


def worker(monkeypatch: pytest.MonkeyPatch, now: list[float]) -> Worker:
    monkeypatch.setattr(service.time, "monotonic", lambda: now[0])
    return Worker(WorkerSettings.from_env({}, redis_url="redis://127.0.0.1:1/0", consumer="w", batch_size=10))


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
