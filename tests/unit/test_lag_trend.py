from __future__ import annotations

from collections.abc import Sequence

from worker.lag import (
    ConsumerLag,
    LagSample,
    LagTrend,
    LagTrendPolicy,
    TrendStatus,
    evaluate_lag_trend,
)
from worker.stream_entries import parse_stream_id

POLICY = LagTrendPolicy(window_s=60.0, min_span_s=30.0, stop_after_s=120.0)
NOW = 10_000.0


def series(
    backlogs: Sequence[int], committed: Sequence[int | None], *, step: float = 10.0, pending: int = 0
) -> list[LagSample]:
    """Samples ending at NOW, `step` seconds apart; backlog given as undelivered count (plus `pending`)."""
    start = NOW - step * (len(backlogs) - 1)
    return [
        LagSample(at=start + i * step, count=count, pending=pending, committed=done)
        for i, (count, done) in enumerate(zip(backlogs, committed, strict=True))
    ]


def test_unknown_when_redis_never_knew_the_count() -> None:
    samples = [LagSample(NOW - 10 * i, None, 5, 100) for i in range(6)]
    assert evaluate_lag_trend(samples, NOW, POLICY) is TrendStatus.UNKNOWN
    assert evaluate_lag_trend([], NOW, POLICY) is TrendStatus.UNKNOWN


def test_ok_when_the_consumer_caught_up_within_the_window() -> None:
    samples = series([0, 5, 10, 20, 40, 80, 160], [0, 0, 0, 0, 0, 0, 0])
    assert evaluate_lag_trend(samples, NOW, POLICY) is TrendStatus.OK


def test_a_caught_up_sample_older_than_the_window_does_not_count() -> None:
    samples = series([0, 5, 10, 20, 40, 80, 160, 320], [0, 5, 10, 15, 20, 25, 30, 35])
    assert samples[0].at < NOW - POLICY.window_s
    assert evaluate_lag_trend(samples, NOW, POLICY) is TrendStatus.WARN


def test_warn_when_the_backlog_only_rises_while_the_consumer_works() -> None:
    samples = series([10, 12, 12, 15, 20, 26, 30], [100, 140, 180, 220, 260, 300, 340])
    assert evaluate_lag_trend(samples, NOW, POLICY) is TrendStatus.WARN


def test_ok_when_the_backlog_falls_even_once() -> None:
    samples = series([10, 12, 15, 11, 20, 26, 30], [100, 140, 180, 220, 260, 300, 340])
    assert evaluate_lag_trend(samples, NOW, POLICY) is TrendStatus.OK


def test_ok_when_a_steady_backlog_is_being_worked_through() -> None:
    samples = series([30, 28, 31, 25, 27, 22, 20], [100, 140, 180, 220, 260, 300, 340])
    assert evaluate_lag_trend(samples, NOW, POLICY) is TrendStatus.OK


def test_stall_when_pending_entries_do_not_move_for_a_window() -> None:
    samples = series([0, 0, 0, 0, 0, 0, 0], [500] * 7, pending=3)
    assert evaluate_lag_trend(samples, NOW, POLICY) is TrendStatus.STALL


def test_stall_when_nothing_is_acknowledged_while_entries_wait_undelivered() -> None:
    samples = series([5, 6, 7, 8, 9, 10, 11], [500] * 7)
    assert evaluate_lag_trend(samples, NOW, POLICY) is TrendStatus.STALL


def test_no_trend_judged_from_a_window_too_short() -> None:
    samples = series([5, 6, 7], [500] * 3, step=5.0)
    assert evaluate_lag_trend(samples, NOW, POLICY) is TrendStatus.TOO_SHORT
    # One sample with entries waiting says nothing about a trend: not "ok".
    assert evaluate_lag_trend(samples[-1:], NOW, POLICY) is TrendStatus.TOO_SHORT
    # Caught up needs no span: a drained stream is fine from the first sample.
    assert evaluate_lag_trend([LagSample(NOW, 0, 0, 500)], NOW, POLICY) is TrendStatus.OK


def test_stop_when_nothing_is_committed_for_longer_than_the_limit() -> None:
    samples = series([5] * 14, [500] * 14)  # 130 s without progress
    assert evaluate_lag_trend(samples, NOW, POLICY) is TrendStatus.STOP


def test_stop_counts_from_the_last_progress() -> None:
    committed = [100, 200, 300, 400, 500, 500, 500, 500, 500, 500, 500, 500, 500, 500]
    samples = series([5] * 14, committed)  # last progress 90 s ago
    assert evaluate_lag_trend(samples, NOW, POLICY) is TrendStatus.STALL
    later = [*samples, LagSample(NOW + 40, 5, 0, 500)]
    assert evaluate_lag_trend(later, NOW + 40, POLICY) is TrendStatus.STOP


def test_a_caught_up_consumer_that_stopped_committing_is_fine() -> None:
    samples = series([0] * 14, [500] * 14)  # idle stream: nothing to commit
    assert evaluate_lag_trend(samples, NOW, POLICY) is TrendStatus.OK


def test_unknown_counts_in_some_samples_are_skipped() -> None:
    samples = series([10, None, 12, None, 20, 26, 30], [100, 140, 180, 220, 260, 300, 340])  # type: ignore[list-item]
    assert evaluate_lag_trend(samples, NOW, POLICY) is TrendStatus.WARN


def test_sample_from_consumer_lag_derives_committed_from_the_count_not_entries_read() -> None:
    # 50 added, 7 undelivered: 43 delivered, 3 of them pending. entries-read says 10: stale (a Redis 7.0 restart).
    lag = ConsumerLag(count=7, pending=3, seconds=1.5, oldest_id="1-0", last_delivered_id="9-0", entries_read=10,
                      stream_length=50, entries_added=50)
    assert LagSample.from_consumer_lag(lag, at=5.0) == LagSample(at=5.0, count=7, pending=3, committed=40,
                                                                 position="9-0", count_min=7)
    unknown = ConsumerLag(None, 0, 0.0, None, "0-0", None, 3)
    assert LagSample.from_consumer_lag(unknown, at=5.0).committed is None
    assert unknown.count_text == "unknown"
    # Only a bound (Redis's figure within it, taken as the count): neither count nor committed, not a guess; the
    # group's position and the bound's low end.
    bound = ConsumerLag(600, 4, 1.0, "1-0", "9-0", 400, 1000, count_exact=False, count_min=256, count_max=744,
                        redis_lag=600, entries_added=1000)
    assert LagSample.from_consumer_lag(bound, at=5.0) == LagSample(at=5.0, count=None, pending=4, committed=None,
                                                                   position="9-0", count_min=256)


def test_lag_trend_keeps_enough_history_to_see_a_stop() -> None:
    trend = LagTrend(POLICY)
    for second in range(0, 400, 5):
        trend.add(LagSample(NOW + second, 4, 1, 42))
    assert trend.samples[0].at >= NOW + 395 - POLICY.retention_s
    assert trend.status(NOW + 395) is TrendStatus.STOP


def test_stream_ids_order_numerically() -> None:
    assert parse_stream_id(b"1712345678901-3") == (1712345678901, 3)
    assert parse_stream_id("9-0") < parse_stream_id("10-0")


def test_with_only_the_group_s_position_a_still_group_with_a_backlog_stalls_then_stops() -> None:
    # What a bound gives: no count, no committed; at least 256 wait, the same last-delivered id and pending count.
    still = [LagSample(NOW - 10 * i, None, 4, None, position="5-0", count_min=256) for i in range(20)]
    assert evaluate_lag_trend(still[:4], NOW, POLICY) is TrendStatus.STALL
    assert evaluate_lag_trend(still, NOW, POLICY) is TrendStatus.STOP
    # Its position moving is progress; so is pending falling (entries acknowledged, none delivered).
    moving = [LagSample(NOW - 10 * i, None, 4, None, position=f"{100 - i}-0", count_min=256) for i in range(20)]
    assert evaluate_lag_trend(moving, NOW, POLICY) is TrendStatus.OK
    acking = [LagSample(NOW - 10 * i, None, 4 + i, None, position="5-0", count_min=256) for i in range(20)]
    assert evaluate_lag_trend(acking, NOW, POLICY) is TrendStatus.OK
    # No backlog known (nothing pending, the bound's low end unknown): not stopped.
    idle = [LagSample(NOW - 10 * i, None, 0, None, position="5-0") for i in range(20)]
    assert evaluate_lag_trend(idle, NOW, POLICY) is TrendStatus.OK


def test_a_counted_consumer_that_reads_but_never_acknowledges_is_still_stopped() -> None:
    # The position moves (entries delivered) but committed does not: counted samples judge on committed.
    samples = [LagSample(NOW - 10 * i, 50, 5 + 20 - i, 100, position=f"{100 - i}-0") for i in range(20)]
    assert evaluate_lag_trend(samples, NOW, POLICY) is TrendStatus.STOP
