"""Fixtures that run real `tactical-worker` processes against the test's Redis."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from worker.process import WorkerProcess

_names = itertools.count(1)


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Start a worker process: `start_worker(redis_url, **settings)`; all are stopped (SIGTERM) at teardown."""
    started: list[WorkerProcess] = []

    def start(redis_url: str, *, consumer: str | None = None, wait_ready_s: float = 90.0, **settings: object):
        name = consumer or f"test-worker-{next(_names)}"
        process = WorkerProcess(
            redis_url=redis_url,
            consumer=name,
            log_path=tmp_path / f"{name}.log",
            settings={"claim_min_idle_ms": 1000, "claim_interval_ms": 200, **{k: str(v) for k, v in settings.items()}},
        )
        started.append(process)
        return process.start(wait_ready_s=wait_ready_s)

    yield start
    for process in started:
        process.stop(timeout_s=30)
