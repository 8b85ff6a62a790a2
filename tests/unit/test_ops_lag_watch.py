"""Lag as `tacticalctl lag` judges it: runbook thresholds on seconds, the trend of the samples, rates in and out."""

from __future__ import annotations

from worker.health import CheckStatus
from worker.lag import ConsumerLag, LagTrendPolicy, TrendStatus
from worker.ops.lag_watch import LagMonitor, RateSource, trend_level


def lag(*, count: int | None = 0, pending: int = 0, seconds: float = 0.0, read: int | None = 0,
        length: int = 0, added: int | None = None) -> ConsumerLag:
    """Redis's lag agrees with the count (entries-read not stale) unless `read` says otherwise; the group's position
    moves with `read`."""
    redis_lag = None if added is None or read is None else added - read
    return ConsumerLag(count=count, pending=pending, seconds=seconds, oldest_id=None,
                       last_delivered_id=f"{read or 0}-0",
                       entries_read=read, stream_length=length, redis_lag=redis_lag, entries_added=added,
                       removed=None if added is None else added - length, max_deleted_id="0-0")


def bound(*, redis_lag: int | None, read: int, added: int, pending: int = 0) -> ConsumerLag:
    """A count known only as 256–744 (1000 entries), Redis's figure taken where it lies within."""
    within = redis_lag is not None and 256 <= redis_lag <= 744
    return ConsumerLag(count=redis_lag if within else None, pending=pending, seconds=1.0, oldest_id=None,
                       last_delivered_id=f"{read}-0", entries_read=read, stream_length=1000, count_exact=False,
                       count_min=256, count_max=744, redis_lag=redis_lag, entries_added=added,
                       removed=added - 1000, max_deleted_id="0-0")


def test_seconds_are_judged_at_the_runbook_thresholds() -> None:
    monitor = LagMonitor()
    assert monitor.observe(lag(seconds=2.0), at=0.0).status is CheckStatus.OK  # at the threshold is still fine
    assert monitor.observe(lag(seconds=2.1, count=3), at=1.0).status is CheckStatus.WARN
    assert monitor.observe(lag(seconds=5.1, count=3), at=2.0).status is CheckStatus.CRITICAL


def test_rates_in_and_out_come_from_entries_added_and_the_entries_delivered_as_counted() -> None:
    monitor = LagMonitor(rate_window_s=10.0)
    first = monitor.observe(lag(read=100, length=100, added=100), at=0.0)
    assert first.rate_in_per_s is None and first.rate_out_per_s is None
    second = monitor.observe(lag(read=140, length=160, count=20, added=160), at=2.0)
    assert second.rate_in_per_s == 30.0
    assert (second.rate_out_per_s, second.rate_out_source) == (20.0, RateSource.COUNTED)


def test_the_out_rate_across_a_stale_entries_read_is_counted_not_read_off_it() -> None:
    # Redis restarted between the samples and reloaded entries-read as of its last AOF rewrite (140 → 20): the
    # rate used to read 0/s (max(0, 20 - 140)); 40 entries were delivered.
    monitor = LagMonitor(rate_window_s=10.0)
    monitor.observe(lag(read=100, count=0, length=100, added=100), at=0.0)
    after = monitor.observe(lag(read=20, count=20, length=160, added=160), at=2.0)
    assert (after.rate_out_per_s, after.rate_out_source) == (20.0, RateSource.COUNTED)


def test_with_a_bound_the_out_rate_is_redis_s_said_so_and_unknown_once_entries_read_is_ruled_out() -> None:
    monitor = LagMonitor(rate_window_s=10.0)
    monitor.observe(bound(redis_lag=600, read=400, added=1000), at=0.0)
    grown = monitor.observe(bound(redis_lag=560, read=460, added=1020), at=2.0)
    assert (grown.rate_out_per_s, grown.rate_out_source) == (30.0, RateSource.REDIS)
    stale = monitor.observe(bound(redis_lag=900, read=140, added=1040), at=4.0)  # outside the bound: stale
    assert (stale.rate_out_per_s, stale.rate_out_source) == (None, RateSource.UNKNOWN)
    monitor = LagMonitor(rate_window_s=10.0)
    monitor.observe(bound(redis_lag=300, read=700, added=1000), at=0.0)
    gone_back = monitor.observe(bound(redis_lag=700, read=300, added=1000), at=2.0)  # within, but went back
    assert (gone_back.rate_out_per_s, gone_back.rate_out_source) == (None, RateSource.UNKNOWN)
    assert gone_back.trend is TrendStatus.TOO_SHORT  # with a bound too: the group's position says whether it moved


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
        reading = monitor.observe(lag(count=5, pending=5, seconds=1.0, read=50, added=60), at=float(second))
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
    assert reading.trend is TrendStatus.TOO_SHORT  # one sample: its position alone calls no trend
    assert reading.status is CheckStatus.OK
    assert reading.as_dict()["count"] is None


def test_the_sparkline_history_is_bounded() -> None:
    monitor = LagMonitor(history=3)
    for second in range(5):
        monitor.observe(lag(seconds=float(second)), at=float(second))
    assert monitor.recent_seconds == [2.0, 3.0, 4.0]
