"""P50/P99 from the /metrics histogram, the way Prometheus computes them, judged by the runbook's thresholds."""

from __future__ import annotations

import math

import pytest

from worker.health import CheckStatus
from worker.metrics import TacticalMetrics
from worker.ops.latency import (
    NoLatencyHistogram,
    end_to_end,
    histogram_quantile,
    operation_latencies,
    worst,
)
from worker.ops.worker_client import parse_metrics

INF = math.inf


def scrape(metrics: TacticalMetrics) -> dict:
    body, _ = metrics.render()
    return parse_metrics(body.decode())


def test_quantile_interpolates_inside_the_bucket_like_prometheus() -> None:
    buckets = [(0.001, 0.0), (0.005, 10.0), (0.01, 10.0), (INF, 10.0)]
    value, saturated = histogram_quantile(0.5, buckets)
    assert value == pytest.approx(0.003)  # rank 5 of 10, halfway through (0.001, 0.005]
    assert not saturated


def test_quantile_in_the_overflow_bucket_reads_the_last_bound_and_says_so() -> None:
    value, saturated = histogram_quantile(0.99, [(0.5, 0.0), (1.0, 1.0), (INF, 10.0)])
    assert value == 1.0
    assert saturated


def test_no_observations_is_no_quantile() -> None:
    assert histogram_quantile(0.99, [(0.1, 0.0), (INF, 0.0)]) == (None, False)
    assert histogram_quantile(0.5, [(0.1, 3.0)]) == (None, False)  # no +Inf bucket: not a histogram


def test_fast_events_are_ok() -> None:
    metrics = TacticalMetrics()
    for _ in range(200):
        metrics.observe_stage("end_to_end", 0.004, synergy_type="TYPE_1")
    row = end_to_end(operation_latencies(scrape(metrics)))
    assert row is not None and row.count == 200
    assert row.p99_ms is not None and row.p99_ms <= 5.0
    assert row.status is CheckStatus.OK


def test_p50_above_50ms_warns_and_p99_above_100ms_is_critical() -> None:
    slowish = TacticalMetrics()
    for _ in range(100):
        slowish.observe_stage("end_to_end", 0.07, synergy_type="TYPE_2")  # all in (0.05, 0.075]
    row = end_to_end(operation_latencies(scrape(slowish)))
    assert row is not None and row.status is CheckStatus.WARN

    slow_tail = TacticalMetrics()
    for index in range(100):
        slow_tail.observe_stage("end_to_end", 0.3 if index < 5 else 0.004, synergy_type="TYPE_1")
    rows = operation_latencies(scrape(slow_tail))
    row = end_to_end(rows)
    assert row is not None
    assert row.p99_ms is not None and row.p99_ms > 100
    assert row.status is CheckStatus.CRITICAL
    assert worst(rows) is CheckStatus.CRITICAL


def test_end_to_end_sums_the_synergy_types_and_agents_stay_apart() -> None:
    metrics = TacticalMetrics()
    metrics.observe_stage("end_to_end", 0.002, synergy_type="TYPE_1")
    metrics.observe_stage("end_to_end", 0.002, synergy_type="TYPE_3")
    metrics.observe_stage("inference", 0.0004, agent_type="fvg")
    rows = {(r.operation, r.agent_type): r for r in operation_latencies(scrape(metrics))}
    assert rows[("end_to_end", "all")].count == 2
    assert rows[("inference", "fvg")].count == 1
    assert rows[("inference", "momentum")].count == 0
    assert rows[("inference", "fvg")].label == "inference (fvg)"


def test_a_window_between_two_scrapes_sees_only_what_happened_in_it() -> None:
    metrics = TacticalMetrics()
    for _ in range(50):
        metrics.observe_stage("end_to_end", 0.4, synergy_type="TYPE_1")
    earlier = scrape(metrics)
    for _ in range(50):
        metrics.observe_stage("end_to_end", 0.003, synergy_type="TYPE_1")
    since_start = end_to_end(operation_latencies(scrape(metrics)))
    window = end_to_end(operation_latencies(scrape(metrics), earlier))
    assert since_start is not None and window is not None
    assert since_start.status is CheckStatus.CRITICAL
    assert window.count == 50
    assert window.status is CheckStatus.OK


def test_a_restarted_worker_counts_from_zero() -> None:
    before = TacticalMetrics()
    for _ in range(10):
        before.observe_stage("end_to_end", 0.003, synergy_type="TYPE_1")
    after = TacticalMetrics()
    after.observe_stage("end_to_end", 0.003, synergy_type="TYPE_1")
    row = end_to_end(operation_latencies(scrape(after), scrape(before)))
    assert row is not None and row.count == 1


def test_metrics_without_the_histogram_are_refused() -> None:
    with pytest.raises(NoLatencyHistogram, match="tactical_request_duration_seconds"):
        operation_latencies(parse_metrics("# TYPE up gauge\nup 1\n"))


def test_a_stage_reads_the_same_events_as_end_to_end_so_a_slow_lone_event_is_not_its_p99() -> None:
    # As the worker observes them: ten full batches decided in 2 ms and one batch of a single event that spent 200 ms
    # in inference. One event in 1001 is not the P99 of end_to_end, and not of inference either.
    metrics = TacticalMetrics()
    for _ in range(10):
        metrics.observe_events([0.002] * 100, ["TYPE_1"] * 100, ["hold"] * 100)
        metrics.observe_stages({"validate": 0.0002, "inference": 0.001, "aggregate": 0.0002, "commit": 0.0006}, 100)
    metrics.observe_events([0.201], ["TYPE_2"], ["hold"])
    metrics.observe_stages({"validate": 0.0002, "inference": 0.2, "aggregate": 0.0002, "commit": 0.0006}, 1)

    rows = {r.operation: r for r in operation_latencies(scrape(metrics)) if r.agent_type == "all"}
    assert {rows[stage].count for stage in ("end_to_end", "validate", "inference", "aggregate", "commit")} == {1001}
    assert rows["end_to_end"].status is CheckStatus.OK
    assert rows["inference"].status is CheckStatus.OK, "weighted per batch, 1 batch in 11 read as P99 200 ms"
    end_to_end_p99 = rows["end_to_end"].p99_ms
    assert end_to_end_p99 is not None
    for stage in ("validate", "inference", "aggregate", "commit"):
        p99 = rows[stage].p99_ms
        assert p99 is not None and p99 <= end_to_end_p99, stage
