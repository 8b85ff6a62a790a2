"""The benchmark's arithmetic and rendering, without processes: percentiles, ratios, CPU, JSON, table, plot."""

from __future__ import annotations

import math
import os

import pytest
from rich.console import Console

from bench.cpu import process_cpu_seconds
from bench.report import BenchReport, LatencySummary, LoadPoint, PhaseResult, plot_latency, render_table
from bench.workload import Workload


def phase(name: str, rate: float | None, p50_ms: float, completed: int = 1000, elapsed_s: float = 1.0,
          cpu_s: float | None = 0.1) -> PhaseResult:
    latency = LatencySummary(completed, p50_ms, p50_ms * 1.5, p50_ms * 2, p50_ms * 3)
    return PhaseResult(name, rate, latency, sent=completed, completed=completed, elapsed_s=elapsed_s,
                       process_cpu_s=cpu_s, redis_cpu_s=0.05)


def report(*points: LoadPoint) -> BenchReport:
    return BenchReport(duration_s=1.0, workers=1, model=LatencySummary(10, 0.1, 0.12, 0.2, 0.3),
                       model_batch_us_per_event=5.0, model_batch_size=100, points=points,
                       machine={"nproc": 2})


def test_percentiles_interpolate_between_ranks_and_max_is_the_largest_sample() -> None:
    summary = LatencySummary.from_seconds([i / 1000 for i in range(1, 101)])  # 1 … 100 ms
    assert summary.count == 100
    assert summary.p50_ms == pytest.approx(50.5)
    assert summary.p90_ms == pytest.approx(90.1)
    assert summary.p99_ms == pytest.approx(99.01)
    assert summary.max_ms == pytest.approx(100.0)


def measured_round(name: str, samples_ms: list[float], elapsed_s: float, cpu_s: float | None) -> PhaseResult:
    samples = tuple(ms / 1e3 for ms in samples_ms)
    return PhaseResult(name, 1000.0, LatencySummary.from_seconds(samples), sent=len(samples) + 1,
                       completed=len(samples), elapsed_s=elapsed_s, process_cpu_s=cpu_s, redis_cpu_s=0.01,
                       client_cpu_s=0.03, latencies_s=samples)


def test_rounds_pool_their_samples_and_add_up_events_time_and_cpu() -> None:
    quiet = measured_round("e2e", [1.0, 1.0, 1.0], elapsed_s=2.0, cpu_s=0.2)
    busy = measured_round("e2e", [9.0], elapsed_s=1.0, cpu_s=0.1)

    pooled = PhaseResult.pooled([quiet, busy])

    # Percentiles of all four samples: the median is 1 ms (an average of the rounds' medians would say 5 ms).
    assert pooled.latency.p50_ms == pytest.approx(1.0) and pooled.latency.max_ms == pytest.approx(9.0)
    assert (pooled.completed, pooled.sent) == (4, 6)
    assert pooled.elapsed_s == pytest.approx(3.0) and pooled.throughput_eps == pytest.approx(4 / 3)
    assert pooled.process_cpu_s == pytest.approx(0.3) and pooled.redis_cpu_s == pytest.approx(0.02)
    assert pooled.client_cpu_s == pytest.approx(0.06) and pooled.client_cpu_us_per_event == pytest.approx(15_000)
    assert pooled.to_json()["client_cpu_us_per_event"] == 15_000
    assert PhaseResult.pooled([quiet, measured_round("e2e", [2.0], 1.0, None)]).process_cpu_s is None


def test_only_rounds_of_one_target_with_their_samples_are_pooled() -> None:
    with pytest.raises(ValueError, match="one target"):
        PhaseResult.pooled([measured_round("e2e", [1.0], 1.0, 0.1), measured_round("floor", [1.0], 1.0, 0.1)])
    with pytest.raises(ValueError, match="samples"):
        PhaseResult.pooled([phase("e2e", 1000.0, 1.0)])  # a summary without its samples


def test_no_samples_give_unknown_percentiles_never_zero() -> None:
    summary = LatencySummary.from_seconds([])
    assert summary.count == 0 and math.isnan(summary.p50_ms)
    assert summary.to_json()["p50_ms"] is None


def test_throughput_and_cpu_per_event_come_from_completed_events() -> None:
    result = phase("e2e", 1000.0, 1.0, completed=500, elapsed_s=0.25, cpu_s=0.05)
    assert result.throughput_eps == pytest.approx(2000.0)
    assert result.cpu_us_per_event == pytest.approx(100.0)
    assert phase("e2e", 1000.0, 1.0, cpu_s=None).cpu_us_per_event is None


def test_ratios_compare_within_one_load_and_throughput_only_under_max() -> None:
    at_rate = LoadPoint(1000.0, e2e=phase("e2e", 1000.0, 1.0), floor=phase("floor", 1000.0, 0.5),
                        reference=phase("reference", 1000.0, 0.8), peer=phase("peer", 100.0, 5.0))
    ratios = at_rate.ratios()
    assert ratios["e2e_p50_over_floor_p50"] == pytest.approx(2.0)
    assert ratios["peer_p50_over_e2e_p50"] == pytest.approx(5.0)
    assert "e2e_throughput_over_reference" not in ratios and "e2e_throughput_over_peer" not in ratios

    flat_out = LoadPoint(None, e2e=phase("e2e", None, 100.0, completed=7000),
                         floor=phase("floor", None, 50.0, completed=20000),
                         reference=phase("reference", None, 80.0, completed=8000),
                         peer=phase("peer", None, 900.0, completed=400))
    ratios = flat_out.ratios()
    assert ratios["e2e_throughput_over_reference"] == pytest.approx(0.875)
    assert ratios["e2e_throughput_over_peer"] == pytest.approx(17.5)


def test_json_has_the_documented_keys_from_the_first_load_and_a_sweep_of_all() -> None:
    points = [LoadPoint(rate, e2e=phase("e2e", rate, 1.0), floor=phase("floor", rate, 0.5),
                        reference=phase("reference", rate, 0.8)) for rate in (100.0, 1000.0)]
    doc = report(*points).to_json()
    assert doc["rate"] == 100.0 and doc["mode"] == "rate"
    assert {"rate", "duration_s", "workers", "e2e", "floor", "model", "reference", "throughput_eps"} <= set(doc)
    assert {"p50_ms", "p90_ms", "p99_ms", "max_ms"} <= set(doc["e2e"])
    assert [point["rate"] for point in doc["sweep"]] == [100.0, 1000.0]
    assert "peer" not in doc
    assert "sweep" not in report(points[0]).to_json()


def test_table_and_plot_render_a_sweep(tmp_path) -> None:
    points = [LoadPoint(rate, e2e=phase("e2e", rate, rate / 1000), floor=phase("floor", rate, 0.5),
                        reference=phase("reference", rate, 0.8), peer=phase("peer", min(rate, 100.0), 5.0))
              for rate in (100.0, 1000.0)]
    console = Console(width=200, record=True, no_color=True)
    console.print(render_table(report(*points)))
    text = console.export_text()
    assert "e2e" in text and "floor" in text and "peer" in text and "model alone" in text
    assert "e2e/floor p50 2.00×" in text
    path = plot_latency(report(*points), tmp_path / "latency.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_table_written_to_a_file_folds_its_cells_never_cuts_them() -> None:
    # Not a terminal: Rich renders 80 columns wide, and eleven columns of figures do not fit on one line. A cell cut
    # to "…" loses the figure the run was for.
    point = LoadPoint(1000.0, e2e=phase("e2e", 1000.0, 2.8, completed=10_000), floor=phase("floor", 1000.0, 1.36),
                      reference=phase("reference", 1000.0, 2.43))
    console = Console(width=80, record=True, no_color=True)
    console.print(render_table(report(point)))
    text = console.export_text()
    assert "…" not in text, text


def test_process_cpu_seconds_grow_while_the_process_works() -> None:
    before = process_cpu_seconds(os.getpid())
    total = 0
    while process_cpu_seconds(os.getpid()) - before < 0.05:
        total += sum(range(10_000))
    assert process_cpu_seconds(os.getpid()) > before


def test_each_send_gets_its_own_correlation_id_on_a_valid_event(workload: Workload) -> None:
    from worker.events import decode_event

    first, second = workload.fields(0, "a-1"), workload.fields(len(workload.templates), "a-2")
    assert decode_event(first).correlation_id == "a-1" and decode_event(second).correlation_id == "a-2"
    assert first[b"matrix"] == second[b"matrix"], "the pool is reused in a cycle"
