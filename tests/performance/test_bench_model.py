"""`bench.model.measure_model`: one sample per call, and `before_each` runs before every timed call, not timed."""

from __future__ import annotations

import time

import pytest

from bench.model import measure_model
from bench.workload import Workload
from worker.inference import AgentEnsemble


def test_before_each_runs_once_per_timed_call_outside_the_timing(ensemble: AgentEnsemble) -> None:
    calls: list[float] = []

    def between() -> None:
        calls.append(time.perf_counter())
        time.sleep(0.05)  # far longer than a forward pass: if it were timed, every sample would show it

    summary = measure_model(ensemble, Workload.simulated(8), iterations=6, before_each=between)

    assert len(calls) == 6
    assert summary.count == 6
    assert summary.max_ms < 50


def test_measure_model_refuses_no_iterations(ensemble: AgentEnsemble) -> None:
    with pytest.raises(ValueError, match="iterations"):
        measure_model(ensemble, Workload.simulated(8), iterations=0)
