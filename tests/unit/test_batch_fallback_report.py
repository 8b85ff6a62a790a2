"""A batch that failed as a whole, its events then decided one at a time, is reported: counted every time, logged at
most once a minute with how many there were, so a broken batched path is seen without flooding the log."""

from __future__ import annotations

import logging

import pytest

from worker import service
from worker.pipeline import BatchResult
from worker.service import Worker
from worker.settings import WorkerSettings


def test_each_fallback_is_counted_and_the_log_says_how_many_once_a_minute(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    worker = Worker(WorkerSettings.from_env({}, redis_url="redis://127.0.0.1:1/0", consumer="w"))
    now = [1000.0]
    monkeypatch.setattr(service.time, "monotonic", lambda: now[0])
    fallback = BatchResult(read=10, batch_error="inference failed: RuntimeError: shape mismatch")

    with caplog.at_level(logging.WARNING, logger="tactical.worker"):
        for _ in range(3):
            worker.record_results([fallback])
            now[0] += 1
        now[0] += 60
        worker.record_results([fallback, BatchResult(read=10)])

    reports = [r.getMessage() for r in caplog.records if "decided one event at a time" in r.getMessage()]
    assert len(reports) == 2
    assert reports[0].startswith("1 batch(es)") and reports[1].startswith("3 batch(es)")
    assert "shape mismatch" in reports[1]
    assert worker.telemetry.window.snapshot().errors == {"batch": 4}


def test_fallbacks_not_yet_reported_are_logged_by_the_periodic_work_or_at_shutdown(
    caplog: pytest.LogCaptureFixture,
) -> None:
    worker = Worker(WorkerSettings.from_env({}, redis_url="redis://127.0.0.1:1/0", consumer="w"))
    fallback = BatchResult(read=10, batch_error="aggregate failed: ValueError: nan")
    with caplog.at_level(logging.WARNING, logger="tactical.worker"):
        worker.record_results([fallback, fallback])  # the first is logged at once, the second waits a minute
        worker.flush_batch_fallbacks(now=worker._next_fallback_report - 1)
        worker.shutdown()  # the fallbacks stopped: what is left is said on the way out
    reports = [r.getMessage() for r in caplog.records if "decided one event at a time" in r.getMessage()]
    assert [r.split(" ")[0] for r in reports] == ["1", "1"]
