"""A worker keeps the row-invariant kernels selected from startup to shutdown, then gives the process its flags back
(the flags are process-wide: a program embedding a worker gets oneDNN back when the worker stops)."""

from __future__ import annotations

import numpy as np
import torch

from worker.records import MATRIX_SHAPE
from worker.service import Worker
from worker.settings import WorkerSettings


def test_kernels_stay_native_while_the_worker_serves_and_are_restored_after(redis_url: str) -> None:
    settings = WorkerSettings.from_env({}, redis_url=redis_url, consumer="kernels", http_addr="127.0.0.1:0")
    worker = Worker(settings)
    before, torch.backends.mkldnn.enabled = torch.backends.mkldnn.enabled, True  # type: ignore[assignment]  # as worker.inference sets it
    try:
        try:
            worker.startup()
            assert not torch.backends.mkldnn.enabled
            assert worker.ensemble is not None
            worker.ensemble.infer(np.zeros((1, *MATRIX_SHAPE), dtype=np.float32))
            assert not torch.backends.mkldnn.enabled, "a forward pass leaves them selected"
        finally:
            worker.shutdown()
        assert torch.backends.mkldnn.enabled
    finally:
        torch.backends.mkldnn.enabled = before
