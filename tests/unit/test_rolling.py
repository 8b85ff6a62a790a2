"""The rolling window's maths, driven by a fake clock."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.records import EventOutcome
from worker.rolling import LatencySketch, RollingWindow, error_rate

EXECUTED, HOLD, DEAD, DUP = (
    EventOutcome.EXECUTED,
    EventOutcome.HOLD,
    EventOutcome.DEAD_LETTER,
    EventOutcome.DUPLICATE,
)


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def nearest_rank(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def test_percentiles_of_one_to_hundred_ms_are_within_one_percent(clock: FakeClock) -> None:
    window = RollingWindow(60, clock=clock)
    window.record_events([EXECUTED] * 100, [ms / 1000 for ms in range(1, 101)])

    stats = window.snapshot()

    assert stats.latency_count == 100
    assert stats.latency_p50_s == pytest.approx(0.050, rel=0.01)
    assert stats.latency_p99_s == pytest.approx(0.099, rel=0.01)


def test_one_millisecond_latencies_keep_ten_microsecond_accuracy(clock: FakeClock) -> None:
    window = RollingWindow(60, clock=clock)
    samples = [0.00095, 0.00100, 0.00105, 0.00110] * 250
    window.record_events([HOLD] * len(samples), samples)

    stats = window.snapshot()

    assert abs(stats.latency_p50_s - 0.00100) <= 0.00001
    assert abs(stats.latency_p99_s - 0.00110) <= 0.000011


def test_a_slow_tail_shows_in_p99_but_not_p50(clock: FakeClock) -> None:
    window = RollingWindow(60, clock=clock)
    window.record_events([EXECUTED] * 1000, [0.001] * 980 + [0.150] * 20)

    stats = window.snapshot()

    assert stats.latency_p50_s == pytest.approx(0.001, rel=0.01)
    assert stats.latency_p99_s == pytest.approx(0.150, rel=0.01)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(min_value=1e-5, max_value=5.0, allow_nan=False), min_size=1, max_size=300),
    st.sampled_from([0.5, 0.9, 0.99, 1.0]),
)
def test_sketch_quantile_is_within_relative_accuracy_of_exact(values: list[float], q: float) -> None:
    sketch = LatencySketch(relative_accuracy=0.01)
    for value in values:
        sketch.add(value)

    exact = nearest_rank(values, q)

    assert abs(sketch.quantile(q) - exact) <= 0.01 * exact * (1 + 1e-9)


def test_old_seconds_expire_and_recent_ones_stay(clock: FakeClock) -> None:
    window = RollingWindow(10, clock=clock)
    window.record_events([EXECUTED] * 5, [0.200] * 5)
    clock.advance(5)
    window.record_events([HOLD] * 3, [0.002] * 3)

    clock.advance(4.5)  # 9.5 s after the first batch: both still inside the 10 s window
    assert window.snapshot().events == 8

    clock.advance(1)  # the first batch is now 10.5 s old
    stats = window.snapshot()
    assert stats.events == 3
    assert stats.outcomes == {HOLD: 3}
    assert stats.latency_p99_s == pytest.approx(0.002, rel=0.01)

    clock.advance(10)
    stats = window.snapshot()
    assert stats.events == 0
    assert math.isnan(stats.latency_p50_s)
    assert math.isnan(stats.execution_rate)


def test_a_reused_slot_forgets_the_second_it_held_before(clock: FakeClock) -> None:
    window = RollingWindow(3, clock=clock)
    window.record_error("commit")
    clock.advance(3)  # same ring slot, three seconds later
    window.record_error("inference")

    assert window.snapshot().errors == {"inference": 1}


def test_execution_rate_is_executed_over_decided(clock: FakeClock) -> None:
    window = RollingWindow(60, clock=clock)
    window.record_events([EXECUTED, EXECUTED, HOLD, HOLD, HOLD, DUP, DEAD])

    assert window.snapshot().execution_rate == pytest.approx(2 / 5)


def test_error_rate_is_errors_over_attempts_per_operation_and_overall(clock: FakeClock) -> None:
    window = RollingWindow(60, clock=clock)
    window.record_events([HOLD] * 39 + [DEAD])
    window.record_error("validate", handled=True)  # the dead letter above: one of the 40 events handled
    window.record_error("commit", count=3)  # three events of a batch whose commit failed: three attempts more

    stats = window.snapshot()

    assert stats.error_rate == pytest.approx(4 / 43)
    assert stats.error_rates == {"validate": pytest.approx(1 / 43), "commit": pytest.approx(3 / 43)}


def test_a_batch_that_failed_once_then_succeeded_is_half_its_attempts(clock: FakeClock) -> None:
    window = RollingWindow(60, clock=clock)
    for _ in range(2):  # two batches of 100: each fails at inference once, then is decided when retried
        window.record_error("inference", count=100)
        window.record_events([HOLD] * 100)

    assert window.snapshot().error_rate == pytest.approx(0.5)  # 200 failed of 400 attempts: well over 5 %


def test_failures_with_nothing_handled_read_one(clock: FakeClock) -> None:
    window = RollingWindow(60, clock=clock)
    window.record_error("read", count=4)  # Redis unreachable, four tries

    assert window.snapshot().error_rate == 1.0


def test_error_rate_without_events() -> None:
    assert error_rate(0, 0) == 0.0
    assert error_rate(3, 0) == 1.0
    assert error_rate(30, 10) == 1.0
    assert error_rate(1, 20) == 0.05


def test_mean_confidence_ignores_missing_values(clock: FakeClock) -> None:
    window = RollingWindow(60, clock=clock)
    assert math.isnan(window.snapshot().mean_confidence)

    window.record_events([EXECUTED, HOLD, DUP], confidences=[0.9, 0.5, float("nan")])
    window.record_event(HOLD, latency_s=0.001, confidence=0.4)

    assert window.snapshot().mean_confidence == pytest.approx((0.9 + 0.5 + 0.4) / 3)


def test_throughput_counts_only_the_time_the_worker_has_been_up(clock: FakeClock) -> None:
    window = RollingWindow(60, clock=clock)
    for _ in range(100):  # 10 events/s for 10 s
        window.record_event(HOLD)
        clock.advance(0.1)

    assert window.snapshot().throughput_per_s == pytest.approx(10.0, rel=0.01)


def test_throughput_in_steady_state_covers_the_whole_window(clock: FakeClock) -> None:
    window = RollingWindow(10, clock=clock)
    for _ in range(300):  # 20 events/s for 15 s, window 10 s
        window.record_event(HOLD)
        clock.advance(0.05)

    assert window.snapshot().throughput_per_s == pytest.approx(20.0, rel=0.06)


def test_memory_stays_bounded_however_many_distinct_latencies(clock: FakeClock) -> None:
    window = RollingWindow(5, clock=clock)
    for second in range(20):
        window.record_events([HOLD] * 2000, [(i + 1) * 1e-5 + second * 1e-7 for i in range(2000)])
        clock.advance(1)

    live = [slot for slot in window._slots if slot.latencies.count]
    assert len(window._slots) == 5
    assert all(len(slot.latencies.buckets) < 600 for slot in live)


def test_extreme_and_broken_latencies_do_not_raise(clock: FakeClock) -> None:
    window = RollingWindow(60, clock=clock)
    window.record_events([HOLD] * 4, [0.0, -1.0, float("nan"), float("inf")])

    stats = window.snapshot()
    assert stats.latency_count == 4
    assert stats.latency_p50_s == pytest.approx(LatencySketch.MIN_S, rel=0.01)
    assert stats.latency_p99_s == pytest.approx(LatencySketch.MAX_S, rel=0.01)


def test_window_shorter_than_a_second_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1 second"):
        RollingWindow(0.5)
