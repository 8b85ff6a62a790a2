"""Fixtures for performance tests: a real worker process against the test's Redis, and the benchmark's workload."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bench.workload import Workload
from worker.process import WorkerProcess

_names = itertools.count(1)


@pytest.fixture(scope="session")
def workload() -> Workload:
    return Workload.simulated(256)


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Start a `tactical-worker` process: `start_worker(redis_url, **settings)`; stopped (SIGTERM) at teardown."""
    started: list[WorkerProcess] = []

    def start(redis_url: str, **settings: object) -> WorkerProcess:
        name = f"perf-worker-{next(_names)}"
        process = WorkerProcess(
            redis_url=redis_url, consumer=name, log_path=tmp_path / f"{name}.log",
            settings={"torch_threads": "1", **{k: str(v) for k, v in settings.items()}},
        )
        started.append(process)
        return process.start(wait_ready_s=120)

    yield start
    for process in started:
        process.stop(timeout_s=30)
