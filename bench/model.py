"""The model alone: the fused forward pass of the three agents, timed in this process with one torch thread."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bench.report import LatencySummary
from bench.workload import Workload
from worker.events import matrix_from_bytes
from worker.inference import AgentEnsemble
from worker.settings import default_models_dir


def load_ensemble(models_dir: Path | None = None) -> AgentEnsemble:
    """The current bundle, verified, warmed up, on one torch thread (as the worker runs it by default)."""
    from models.bundle import current_bundle_dir

    return AgentEnsemble.load(current_bundle_dir(models_dir or default_models_dir()), threads=1)


def measure_model(ensemble: AgentEnsemble, workload: Workload, *, iterations: int = 2000,
                  batch_size: int = 1, before_each: Callable[[], object] | None = None) -> LatencySummary:
    """Latency of `ensemble.infer` on batches of `batch_size` matrices from the workload, `iterations` times.
    `before_each`, if given, runs (untimed) before every timed call: what the worker does between two forward passes
    (a Redis round trip, say) leaves the caches and predictors in another state than a tight loop does."""
    if iterations < 1 or batch_size < 1:
        raise ValueError(f"iterations and batch_size must be >= 1, got {iterations} and {batch_size}")
    pool = np.stack([matrix_from_bytes(fields[b"matrix"]) for fields in workload.templates])
    batches = [pool[np.arange(i, i + batch_size) % len(pool)] for i in range(0, len(pool), max(1, batch_size))]
    for batch in batches[:3]:
        ensemble.infer(batch)
    samples = []
    clock = time.perf_counter
    for i in range(iterations):
        batch = batches[i % len(batches)]
        if before_each is not None:
            before_each()
        started = clock()
        ensemble.infer(batch)
        samples.append(clock() - started)
    return LatencySummary.from_seconds(samples)
