"""`tacticalctl bench --json`: a short real run prints every documented key, with figures that hang together."""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest
from typer.testing import CliRunner

from tacticalctl.app import app

LATENCY_KEYS = {"p50_ms", "p90_ms", "p99_ms", "max_ms"}


def test_bench_json_prints_the_documented_keys() -> None:
    with_peer = importlib.util.find_spec("celery") is not None
    args = ["bench", "--json", "--rate", "200", "--duration", "0.6", "--warmup", "0", "--rounds", "2"]
    if with_peer:
        args += ["--peer", "celery", "--peer-rate", "50"]
    result = CliRunner().invoke(app, args, env={"NO_COLOR": "1"}, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)

    assert {"rate", "duration_s", "workers", "e2e", "floor", "model", "reference", "throughput_eps"} <= set(doc)
    assert (doc["rate"], doc["duration_s"], doc["rounds"], doc["workers"]) == (200.0, 0.6, 2, 1)
    assert set(doc["e2e"]) >= LATENCY_KEYS
    assert {"p50_ms", "p99_ms"} <= set(doc["floor"]) and {"p50_ms", "p99_ms"} <= set(doc["model"])
    assert {"p50_ms", "p99_ms", "throughput_eps"} <= set(doc["reference"])
    for name in ("e2e", "floor", "reference"):
        phase = doc[name]
        assert phase["completed"] == phase["sent"] > 0, f"{name}: every event sent came back"
        assert phase["sent"] >= 0.9 * 200 * 0.6, f"{name}: both rounds of 0.3 s at 200/s are counted"
        assert 0 < phase["p50_ms"] <= phase["p90_ms"] <= phase["p99_ms"] <= phase["max_ms"]
    assert doc["throughput_eps"] == doc["e2e"]["throughput_eps"] > 0
    assert doc["e2e"]["cpu_us_per_event"] > 0, "CPU per event is measured from the worker process"
    assert all(isinstance(doc[name]["client_cpu_us_per_event"], float) for name in ("e2e", "floor", "reference"))
    assert doc["ratios"]["e2e_p50_over_floor_p50"] > 0
    assert doc["machine"]["nproc"] >= 1
    if with_peer:
        assert {"p50_ms", "p99_ms", "throughput_eps"} <= set(doc["peer"])
        assert doc["peer"]["rate"] == 50.0
        assert doc["peer"]["completed"] == doc["peer"]["sent"] > 0
        assert doc["ratios"]["peer_p50_over_e2e_p50"] > 0
        # At 200/s only the peer's latency target applies (the others are set at 1,000/s or flat out).
        [judged] = doc["targets"]
        assert (judged["target"], judged["load"], judged["wanted"]) == ("peer p50 / e2e p50", "200/s", "≥ 5.00×")
        assert judged["value"] == pytest.approx(doc["ratios"]["peer_p50_over_e2e_p50"], abs=1e-3)
        assert judged["met"] is (judged["value"] >= 5.0)
    else:
        assert "peer" not in doc
        assert doc["targets"] == []


def test_bench_refuses_a_plot_of_max_throughput() -> None:
    result = CliRunner().invoke(app, ["bench", "--max", "--plot", "x.png"], env={"NO_COLOR": "1"})
    assert result.exit_code == 3
    assert "--plot" in result.output and "--max" in result.output


def test_bench_without_the_bench_package_says_where_to_run_it(monkeypatch) -> None:
    # As in the container image, which leaves bench/ out: one clear line, not an ImportError traceback.
    monkeypatch.setitem(sys.modules, "bench", None)
    result = CliRunner().invoke(app, ["bench", "--json"], env={"NO_COLOR": "1"})
    assert result.exit_code == 3
    assert "the benchmark is not installed here" in result.stderr and "source checkout" in result.stderr
