"""`bench.model.measure_model`: one sample per call, and `before_each` runs before every timed call, not timed."""

from __future__ import annotations

import pytest

import bench.model
from bench.model import measure_model
from bench.workload import Workload
from worker.inference import AgentEnsemble


class _StepClock:
    """A clock that only moves when told to: what a sample contains is exact, whatever the machine's load."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 1.0  # every reading costs one tick
        return self.now


def test_before_each_runs_once_per_timed_call_outside_the_timing(
    ensemble: AgentEnsemble, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = _StepClock()
    monkeypatch.setattr(bench.model.time, "perf_counter", clock)
    calls: list[float] = []

    def between() -> None:
        calls.append(clock.now)
        clock.now += 1000.0  # if this were inside a sample, every sample would show it

    summary = measure_model(ensemble, Workload.simulated(8), iterations=6, before_each=between)

    assert len(calls) == 6
    assert summary.count == 6
    assert summary.max_ms == pytest.approx(1000.0)  # one tick (1 s) per sample: start and end readings only


def test_measure_model_refuses_no_iterations(ensemble: AgentEnsemble) -> None:
    with pytest.raises(ValueError, match="iterations"):
        measure_model(ensemble, Workload.simulated(8), iterations=0)
