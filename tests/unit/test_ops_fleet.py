"""How `health --all` judges the fleet from each worker's /health (`FleetHealth`): no Redis, no HTTP."""

from __future__ import annotations

import pytest

from worker.health import CheckStatus
from worker.ops.fleet import STARTING, FleetHealth, LiveWorker, WorkerHealth


def answered(name: str, state_code: int) -> WorkerHealth:
    state = ("healthy", "degraded", "critical", "failed")[state_code]
    return WorkerHealth(LiveWorker(name, f"http://{name}:8001"), 503 if state_code >= 2 else 200,
                        {"state": state, "state_code": state_code, "consumer": name})


def starting(name: str) -> WorkerHealth:
    return WorkerHealth(LiveWorker(name, None), error=STARTING)


def not_read(name: str) -> WorkerHealth:
    return WorkerHealth(LiveWorker(name, f"http://{name}:8001"), error="worker unreachable")


@pytest.mark.parametrize(("workers", "status"), [
    ((answered("a", 0), answered("b", 0)), CheckStatus.OK),
    ((answered("a", 0), answered("b", 1)), CheckStatus.WARN),
    ((answered("a", 1), answered("b", 3)), CheckStatus.CRITICAL),
    ((answered("a", 0), not_read("b")), CheckStatus.CRITICAL),  # live by heartbeat, yet it does not answer
    ((answered("a", 0), starting("b")), CheckStatus.OK),  # shown, not judged
    ((starting("a"),), CheckStatus.WARN),  # none serves /health yet: as one worker's /health while it starts
    ((), CheckStatus.CRITICAL),  # no live worker
])
def test_the_fleet_is_as_healthy_as_its_worst_worker_judged(workers: tuple[WorkerHealth, ...],
                                                           status: CheckStatus) -> None:
    assert FleetHealth(workers).status is status


def test_a_worker_not_read_says_why_and_has_no_state() -> None:
    doc = not_read("b").as_dict()
    assert (doc["check"], doc["state"], doc["state_code"], doc["error"]) == ("critical", None, None,
                                                                            "worker unreachable")
    assert starting("c").as_dict()["check"] is None
