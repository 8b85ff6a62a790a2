"""Fixtures that run real workers against the test's Redis: `tactical-worker` processes, and workers in this process
whose model a test can break (`in_process_worker`)."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.faults import FaultyModel
from worker.process import WorkerProcess
from worker.service import Worker
from worker.settings import WorkerSettings

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
            settings={"claim_min_idle_ms": "1000", "claim_interval_ms": "200",
                      **{k: str(v) for k, v in settings.items()}},
        )
        started.append(process)
        return process.start(wait_ready_s=wait_ready_s)

    yield start
    for process in started:
        process.stop(timeout_s=30)


@pytest.fixture
def in_process_worker() -> Iterator[Callable[..., tuple[Worker, FaultyModel]]]:
    """`in_process_worker(redis_url, consumer, **settings)`: a worker in this process, its loop in a thread, serving
    through a `FaultyModel` the test controls; stopped at the end of the test, which fails if its loop died."""
    started: list[tuple[Worker, threading.Thread, list[BaseException]]] = []

    def start(redis_url: str, consumer: str, **overrides: object) -> tuple[Worker, FaultyModel]:
        options = dict(batch_size=10, breaker_failure_threshold=1000, breaker_reset_timeout_s=30.0,
                       claim_min_idle_ms=300, claim_interval_ms=200, health_interval_s=0.1, stats_window_s=5.0)
        settings = WorkerSettings.from_env({}, redis_url=redis_url, consumer=consumer, http_addr="127.0.0.1:0",
                                           **{**options, **overrides})
        worker = Worker(settings)
        worker.startup()
        assert worker.ensemble is not None and worker.pipeline is not None
        model = FaultyModel(worker.ensemble)
        worker.pipeline.ensemble = model  # type: ignore[assignment]  # a stand-in with the ensemble's infer
        crashed: list[BaseException] = []

        def loop() -> None:
            try:
                worker.main_loop()
            except BaseException as exc:  # the test asserts there is none
                crashed.append(exc)

        thread = threading.Thread(target=loop, daemon=True)
        thread.start()
        started.append((worker, thread, crashed))
        return worker, model

    yield start
    for worker, thread, crashed in started:
        running = thread.is_alive()
        worker.state.should_exit = True
        thread.join(timeout=30)
        worker.shutdown()
        assert not crashed, f"the worker's loop died: {crashed[0]!r}"
        assert running, "the worker's loop had stopped before the end of the test"
