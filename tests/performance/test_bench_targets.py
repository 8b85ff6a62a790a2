"""The performance targets judged against a run: only where the run measured them, unknown never counted as met."""

from __future__ import annotations

import math

import pytest
from rich.console import Console

from bench.report import BenchReport, LatencySummary, LoadPoint, PhaseResult
from bench.targets import judge, render_targets


def phase(name: str, rate: float | None, p50_ms: float, p99_ms: float | None = None, completed: int = 1000,
          elapsed_s: float = 1.0) -> PhaseResult:
    p99 = p50_ms * 2 if p99_ms is None else p99_ms
    latency = LatencySummary(completed, p50_ms, (p50_ms + p99) / 2, p99, p99 * 1.5)
    return PhaseResult(name, rate, latency, sent=completed, completed=completed, elapsed_s=elapsed_s)


def report(*points: LoadPoint, workers: int = 1) -> BenchReport:
    return BenchReport(duration_s=1.0, workers=workers, model=LatencySummary(10, 0.1, 0.12, 0.2, 0.3),
                       model_batch_us_per_event=5.0, model_batch_size=100, points=points)


def verdicts(results: list) -> dict[tuple[str, str], bool | None]:
    return {(result.target.name, result.load): result.met for result in results}


def test_latency_targets_are_judged_at_1000_per_second_only() -> None:
    at_target = LoadPoint(1000.0, e2e=phase("e2e", 1000.0, 0.9, 2.5), floor=phase("floor", 1000.0, 0.5),
                          reference=phase("reference", 1000.0, 0.8))
    elsewhere = LoadPoint(500.0, e2e=phase("e2e", 500.0, 5.0), floor=phase("floor", 500.0, 0.5),
                          reference=phase("reference", 500.0, 0.8))

    results = judge(report(elsewhere, at_target))

    assert verdicts(results) == {
        ("e2e p50", "1000/s"): True,  # 0.9 ms <= 1 ms
        ("e2e p99", "1000/s"): False,  # 2.5 ms > 2 ms
        ("e2e p50 / floor p50", "1000/s"): True,  # 1.8x <= 2x
    }
    ratio = next(result for result in results if result.target.name == "e2e p50 / floor p50")
    assert ratio.value == pytest.approx(1.8)
    assert ratio.to_json() == {"target": "e2e p50 / floor p50", "load": "1000/s", "wanted": "≤ 2.00×", "value": 1.8,
                               "met": True}


def test_throughput_targets_are_judged_flat_out_and_the_6000_only_for_one_worker() -> None:
    flat_out = LoadPoint(None, e2e=phase("e2e", None, 100.0, completed=6500),
                         floor=phase("floor", None, 50.0, completed=20000),
                         reference=phase("reference", None, 80.0, completed=10000))

    assert verdicts(judge(report(flat_out))) == {
        ("throughput, one worker process", "max"): True,  # 6,500 >= 6,000
        ("throughput / reference loop's", "max"): False,  # 0.65 < 0.70
    }
    assert verdicts(judge(report(flat_out, workers=2))) == {("throughput / reference loop's", "max"): False}


def test_peer_targets_latency_at_a_fixed_rate_throughput_flat_out() -> None:
    at_rate = LoadPoint(200.0, e2e=phase("e2e", 200.0, 1.0), floor=phase("floor", 200.0, 0.5),
                        reference=phase("reference", 200.0, 0.8), peer=phase("peer", 100.0, 4.0))
    flat_out = LoadPoint(None, e2e=phase("e2e", None, 100.0, completed=9000),
                         floor=phase("floor", None, 50.0, completed=20000),
                         reference=phase("reference", None, 80.0, completed=10000),
                         peer=phase("peer", None, 900.0, completed=300))

    results = verdicts(judge(report(at_rate, flat_out)))

    assert results[("peer p50 / e2e p50", "200/s")] is False  # 4x < 5x
    assert results[("throughput / peer's", "max")] is True  # 30x >= 10x
    # Flat out a p50 measures each one's queue, not its speed: the 9x here is not judged.
    assert ("peer p50 / e2e p50", "max") not in results
    assert ("throughput / peer's", "200/s") not in results


def test_a_figure_the_run_could_not_measure_is_unknown_never_met() -> None:
    nothing_back = LatencySummary(0, math.nan, math.nan, math.nan, math.nan)
    e2e = PhaseResult("e2e", 1000.0, nothing_back, sent=100, completed=0, elapsed_s=1.0)
    point = LoadPoint(1000.0, e2e=e2e, floor=phase("floor", 1000.0, 0.5), reference=phase("reference", 1000.0, 0.8))

    results = judge(report(point))

    assert [result.met for result in results] == [None, None, None]
    assert all(result.to_json()["value"] is None for result in results)
    console = Console(width=120, record=True, no_color=True)
    console.print(render_targets(results))
    assert console.export_text().count("unknown") == 6  # each row's figure and its verdict


def test_the_table_says_what_each_target_wants_and_whether_the_run_met_it() -> None:
    point = LoadPoint(1000.0, e2e=phase("e2e", 1000.0, 1.66, 3.37), floor=phase("floor", 1000.0, 0.85),
                      reference=phase("reference", 1000.0, 1.42))
    console = Console(width=120, record=True, no_color=True)
    console.print(render_targets(judge(report(point))))
    rows = [line for line in console.export_text().splitlines() if "1000/s" in line]

    assert len(rows) == 3
    assert "≤ 1.00 ms" in rows[0] and "1.66 ms" in rows[0] and rows[0].rstrip(" │").endswith("no")
    assert "≤ 2.00 ms" in rows[1] and "3.37 ms" in rows[1]
    assert "≤ 2.00×" in rows[2] and "1.95×" in rows[2] and rows[2].rstrip(" │").endswith("yes")


def test_a_figure_just_past_its_limit_never_reads_as_the_limit() -> None:
    just_over = LoadPoint(1000.0, e2e=phase("e2e", 1000.0, 1.4643), floor=phase("floor", 1000.0, 0.732),
                          reference=phase("reference", 1000.0, 1.2))
    at_limit = LoadPoint(1000.0, e2e=phase("e2e", 1000.0, 1.464), floor=phase("floor", 1000.0, 0.732),
                         reference=phase("reference", 1000.0, 1.2))
    just_under = LoadPoint(None, e2e=phase("e2e", None, 100.0, completed=6000, elapsed_s=1.00005),
                           floor=phase("floor", None, 50.0, completed=20000),
                           reference=phase("reference", None, 80.0, completed=8000))

    def row(point: LoadPoint, name: str) -> tuple[dict, str]:
        result = next(r for r in judge(report(point)) if r.target.name == name)
        console = Console(width=120, record=True, no_color=True)
        console.print(render_targets([result]))
        return result.to_json(), next(line for line in console.export_text().splitlines() if name in line)

    over_json, over_row = row(just_over, "e2e p50 / floor p50")
    assert over_json["met"] is False and over_json["value"] == 2.0004  # round(…, 3) would say 2.0
    assert "2.0004×" in over_row and over_row.rstrip(" │").endswith("no")
    limit_json, limit_row = row(at_limit, "e2e p50 / floor p50")
    assert limit_json == {**limit_json, "value": 2.0, "met": True} and "2.00×" in limit_row
    under_json, under_row = row(just_under, "throughput, one worker process")
    assert under_json["met"] is False and "5,999.7 events/s" in under_row  # not "6,000 events/s  no"
