"""Lag as `tacticalctl lag` judges it: runbook thresholds on seconds, the trend of the samples, rates in and out."""

from __future__ import annotations

from worker.health import CheckStatus
from worker.lag import ConsumerLag, LagTrendPolicy, TrendStatus
from worker.ops.lag_watch import LagMonitor, trend_level


def lag(*, count: int | None = 0, pending: int = 0, seconds: float = 0.0, read: int | None = 0,
        length: int = 0) -> ConsumerLag:
    return ConsumerLag(count=count, pending=pending, seconds=seconds, oldest_id=None, last_delivered_id="0-0",
                       entries_read=read, stream_length=length)


def test_seconds_are_judged_at_the_runbook_thresholds() -> None:
    monitor = LagMonitor()
    assert monitor.observe(lag(seconds=2.0), at=0.0).status is CheckStatus.OK  # at the threshold is still fine
    assert monitor.observe(lag(seconds=2.1, count=3), at=1.0).status is CheckStatus.WARN
    assert monitor.observe(lag(seconds=5.1, count=3), at=2.0).status is CheckStatus.CRITICAL


def test_rates_in_and_out_come_from_entries_added_and_entries_read_growth() -> None:
    monitor = LagMonitor(rate_window_s=10.0)
    first = monitor.observe(lag(read=100, length=100), at=0.0, entries_added=100)
    assert first.rate_in_per_s is None and first.rate_out_per_s is None
    second = monitor.observe(lag(read=140, length=160, count=20), at=2.0, entries_added=160)
    assert second.rate_in_per_s == 30.0
    assert second.rate_out_per_s == 20.0


def test_rate_in_falls_back_to_stream_length_when_entries_added_is_unknown() -> None:
    monitor = LagMonitor()
    monitor.observe(lag(length=10), at=0.0)
    assert monitor.observe(lag(length=30, count=20), at=4.0).rate_in_per_s == 5.0


def test_rates_are_unknown_when_the_group_cannot_tell_entries_read() -> None:
    monitor = LagMonitor()
    monitor.observe(lag(read=None), at=0.0)
    assert monitor.observe(lag(read=None), at=1.0).rate_out_per_s is None


def test_a_consumer_that_stops_acknowledging_is_critical_even_with_young_entries() -> None:
    monitor = LagMonitor(policy=LagTrendPolicy(window_s=60.0, min_span_s=30.0, stop_after_s=120.0))
    reading = None
    for second in range(0, 200, 10):
        reading = monitor.observe(lag(count=5, pending=5, seconds=1.0, read=50), at=float(second))
    assert reading is not None
    assert reading.check.status is CheckStatus.OK
    assert reading.trend is TrendStatus.STOP
    assert reading.status is CheckStatus.CRITICAL


def test_a_growing_backlog_is_a_warning() -> None:
    monitor = LagMonitor()
    reading = None
    for step in range(7):
        reading = monitor.observe(lag(count=10 * step + 1, pending=1, seconds=0.5, read=step), at=10.0 * step)
    assert reading is not None and reading.trend is TrendStatus.WARN
    assert reading.status is CheckStatus.WARN


def test_unknown_count_does_not_by_itself_raise_the_status() -> None:
    assert trend_level(TrendStatus.UNKNOWN) is CheckStatus.OK
    reading = LagMonitor().observe(lag(count=None, seconds=0.3), at=0.0)
    assert reading.trend is TrendStatus.UNKNOWN
    assert reading.status is CheckStatus.OK
    assert reading.as_dict()["count"] is None


def test_the_sparkline_history_is_bounded() -> None:
    monitor = LagMonitor(history=3)
    for second in range(5):
        monitor.observe(lag(seconds=float(second)), at=float(second))
    assert monitor.recent_seconds == [2.0, 3.0, 4.0]
