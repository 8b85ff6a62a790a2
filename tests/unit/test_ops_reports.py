"""The performance summary and the daily report, computed from decision entries as the worker writes them."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from worker.decision_entry import timing_fields
from worker.ops.duplicates import FleetDuplicates, ScanResult, duplicates_of, repeated_ids
from worker.ops.fleet import WorkerCounter, WorkerMetrics
from worker.ops.reports import (
    HOUR_MS,
    DailyReport,
    DeadLetterStats,
    FleetErrors,
    PerformanceSummary,
    percentile,
    render_markdown,
    summarize_decisions,
    write_report,
)

T0 = 1_750_000_000_000 - 1_750_000_000_000 % HOUR_MS  # the start of an hour, in ms


def decision(decided_ms: int, latency_ms: int, *, executed: bool, inference_ms: float = 0.5) -> tuple[bytes, dict]:
    return (f"{decided_ms}-0".encode(), {
        b"correlation_id": f"cid-{decided_ms}".encode(),
        b"execute": b"1" if executed else b"0",
        b"event_id": f"{decided_ms - latency_ms}-3".encode(),
        **{name.encode(): value.encode() for name, value in timing_fields({"inference": inference_ms,
                                                                           "validate": 0.1}).items()},
    })


def test_percentile_is_nearest_rank() -> None:
    values = list(range(1, 101))
    assert percentile(values, 0.5) == 50
    assert percentile(values, 0.99) == 99
    assert percentile(values, 1.0) == 100
    assert percentile([7.0], 0.99) == 7.0
    assert percentile([], 0.5) is None
    with pytest.raises(ValueError):
        percentile(values, 1.5)


def test_summary_counts_decisions_and_measures_latency_from_the_stream_ids() -> None:
    entries = [decision(T0 + i * 1000, latency_ms=2, executed=i % 4 == 0) for i in range(99)]
    entries.append(decision(T0 + HOUR_MS + 5, latency_ms=250, executed=False, inference_ms=200.0))
    stats = summarize_decisions(entries)
    assert stats.decisions == 100
    assert stats.executed == 25
    assert stats.execution_rate == pytest.approx(0.25)
    assert stats.latency.p50_ms == 2.0
    assert stats.latency.max_ms == 250.0
    assert stats.stages["inference"].max_ms == 200.0
    assert set(stats.stages) == {"inference", "validate"}
    assert [(h.decisions, h.p99_ms) for h in stats.hourly] == [(99, 2.0), (1, 250.0)]
    # The worker's own time: each decision's stage timings summed.
    assert stats.service.p50_ms == pytest.approx(0.6) and stats.service.max_ms == pytest.approx(200.1)
    assert [h.service_p99_ms for h in stats.hourly] == [pytest.approx(0.6), pytest.approx(200.1)]


def test_time_queued_is_end_to_end_latency_not_the_workers() -> None:
    # A worker down for 40 s: its backlog is decided fast once it is back, after a long wait in the stream.
    entries = [decision(T0 + i, latency_ms=40_000 - i * 100, executed=False) for i in range(100)]
    stats = summarize_decisions(entries)
    assert stats.latency.p99_ms is not None and stats.latency.p99_ms > 39_000
    assert stats.service.p99_ms == pytest.approx(0.6)


def test_a_decision_without_its_event_id_counts_but_has_no_latency() -> None:
    entry_id, fields = decision(T0, latency_ms=3, executed=True)
    del fields[b"event_id"]
    stats = summarize_decisions([(entry_id, fields)])
    assert (stats.decisions, stats.executed, stats.latency.count, stats.latency.p99_ms) == (1, 1, 0, None)


def test_repeated_ids_are_most_repeated_first() -> None:
    entries = [(f"{T0 + i}-0", {b"correlation_id": cid.encode()}) for i, cid in enumerate("abacbdaa")]
    offenders = repeated_ids(entries)
    assert [(o.correlation_id, o.count) for o in offenders] == [("a", 4), ("b", 2)]
    assert offenders[0].first_ms == T0 and offenders[0].last_ms == T0 + 7


def report(decisions: list) -> DailyReport:
    summary = PerformanceSummary(T0, T0 + 2 * HOUR_MS, summarize_decisions(decisions),
                                 DeadLetterStats(2, (("invalid_matrix: wrong size", 2),)))
    return DailyReport(
        date="2025-06-15", generated_at="2025-06-15T21:00:00Z", performance=summary, commands=1,
        duplicate_inputs=ScanResult(10, False, tuple(repeated_ids([("1-0", {b"correlation_id": b"x"}),
                                                                   ("2-0", {b"correlation_id": b"x"})]))),
        duplicate_commands=ScanResult(1, False, ()),
        duplicate_events=FleetDuplicates((WorkerCounter("w1", "http://127.0.0.1:9090", 1.0),)),
        worker_errors=FleetErrors((WorkerCounter("w1", "http://127.0.0.1:9090", {"validate": 2.0, "commit": 0.0}),)),
        transitions=({"at": "2025-06-15T14:00:00Z", "kind": "health_transition", "severity": "P1",
                      "from": "healthy", "to": "degraded", "source": "w1", "message": "health healthy → degraded"},),
        alerts_by_severity={"P1": 1},
    )


def test_the_daily_report_is_written_as_markdown_and_json(tmp_path: Path) -> None:
    daily = report([decision(T0 + 10, 4, executed=True), decision(T0 + 20, 6, executed=False)])
    markdown, data = write_report(daily, tmp_path / "reports")
    assert markdown.name == "tactical-report-2025-06-15.md"
    doc = json.loads(data.read_text())
    assert {"date", "decisions", "executed", "execution_rate", "latency", "errors", "duplicates", "transitions",
            "hourly", "stages", "alerts_by_severity", "commands", "period", "truncated"} <= set(doc)
    assert (doc["decisions"], doc["executed"], doc["execution_rate"]) == (2, 1, 0.5)
    assert doc["errors"]["error_rate"] == pytest.approx(0.5)  # 2 dead letters of 4 events handled
    assert doc["duplicates"]["input"]["offenders"][0]["correlation_id"] == "x"
    text = markdown.read_text()
    assert "| decisions | 2 |" in text
    assert "invalid_matrix: wrong size" in text
    assert "healthy → degraded" in text
    # Every worker alerts its own transitions: the report says whose each one is, as its JSON does.
    assert "| 2025-06-15T14:00:00Z | w1 | health_transition | healthy → degraded | health healthy → degraded |" in text


def test_an_empty_day_renders_without_numbers_it_does_not_have() -> None:
    text = render_markdown(report([]))
    assert "| decisions | 0 |" in text
    assert "| execution rate | – |" in text


def test_worker_counters_not_read_are_named_and_never_taken_for_zero() -> None:
    fleet = (WorkerMetrics(None, "http://127.0.0.1:9090", None, "worker unreachable at http://127.0.0.1:9090/metrics"),
             WorkerMetrics("w2", None, None, "its heartbeat names no HTTP endpoint yet: a worker just starting"))
    daily = replace(report([]), duplicate_events=duplicates_of(fleet), worker_errors=FleetErrors.of(fleet))
    doc = daily.as_dict()
    assert (doc["duplicates"]["duplicate_events_total"], doc["errors"]["worker_errors_total"]) == (None, None)
    assert [w["error"] for w in doc["errors"]["workers"]] == [w.error for w in fleet]
    text = render_markdown(daily)
    assert ("| duplicate events counted by the workers | duplicate counter unavailable; not read, so their duplicates "
            "are missing from that total: http://127.0.0.1:9090 (worker unreachable at") in text
    assert "## Worker errors by operation (summed over 0 worker(s), each since its start)\n\n- none\n" in text
    assert ("Not read, so their errors are missing from these sums: http://127.0.0.1:9090 (worker unreachable at "
            "http://127.0.0.1:9090/metrics); not counted: w2 (its heartbeat names no HTTP endpoint yet") in text
