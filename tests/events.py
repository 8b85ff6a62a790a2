"""Many valid events for the tests that publish hundreds or thousands: distinct correlation ids over a small pool of
simulated feature matrices. Simulating a matrix takes a few milliseconds (a short market, then its features), so
thousands of distinct ones cost tens of seconds and test nothing more: the worker tells events apart by correlation
id, never by matrix."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from worker.producer import make_event, simulated_feature_matrix
from worker.records import SynergyEvent

MATRIX_POOL = 32


def many_events(n: int, *, prefix: str = "evt", seed: int = 0, directions: Sequence[int] = (1,)) -> list[SynergyEvent]:
    """`{prefix}-0` … `{prefix}-{n-1}`; event i has direction directions[i % len(directions)], and the matrix
    i % MATRIX_POOL of a pool seeded with `seed`."""
    rng = np.random.default_rng(seed)
    matrices = [simulated_feature_matrix(rng) for _ in range(min(n, MATRIX_POOL))]
    return [make_event(matrices[i % len(matrices)], correlation_id=f"{prefix}-{i}",
                       direction=directions[i % len(directions)]) for i in range(n)]
