"""How `latency --all` judges the fleet from each worker's latency (`FleetLatency`): no Redis, no HTTP."""

from __future__ import annotations

import pytest

from worker.health import CheckStatus
from worker.ops.fleet import STARTING, LiveWorker
from worker.ops.fleet_latency import UNKNOWN, FleetLatency, WorkerLatency
from worker.ops.latency import OperationLatency


def op(operation: str, p99_ms: float, status: CheckStatus = CheckStatus.OK, agent_type: str = "all",
       saturated: bool = False) -> OperationLatency:
    return OperationLatency(operation, agent_type, 100, p99_ms / 2, p99_ms, p99_ms / 2, saturated, status)


def read(name: str, *statuses: CheckStatus) -> WorkerLatency:
    return WorkerLatency(LiveWorker(name, f"http://{name}:8001"),
                         tuple(op("end_to_end", 5.0, status) for status in statuses or (CheckStatus.OK,)))


def starting(name: str) -> WorkerLatency:
    return WorkerLatency(LiveWorker(name, None), error=STARTING)


def not_read(name: str) -> WorkerLatency:
    return WorkerLatency(LiveWorker(name, f"http://{name}:8001"), error="worker unreachable")


def no_histogram(name: str) -> WorkerLatency:
    return WorkerLatency(LiveWorker(name, f"http://{name}:8001"), error="no histogram", no_histogram=True)


@pytest.mark.parametrize(("workers", "status"), [
    ((read("a"), read("b")), "ok"),
    ((read("a"), read("b", CheckStatus.OK, CheckStatus.WARN)), "warn"),
    ((read("a", CheckStatus.WARN), read("b", CheckStatus.CRITICAL)), "critical"),
    ((read("a"), not_read("b")), "critical"),  # live by its heartbeat, yet not read
    ((read("a"), no_histogram("b")), UNKNOWN),  # the check could not run on it: 3 beats 0
    ((read("a", CheckStatus.WARN), no_histogram("b")), "warn"),  # ... and 1 beats 3
    ((read("a"), starting("b")), "ok"),  # shown, not judged
    ((starting("a"),), "warn"),  # nothing judged yet: as health --all says
    ((), "critical"),  # no live worker
])
def test_the_fleet_is_its_worst_worker_in_the_monitoring_plugins_order(
    workers: tuple[WorkerLatency, ...], status: str
) -> None:
    assert FleetLatency(workers).status == status


def test_each_worker_says_its_status_or_why_it_has_none() -> None:
    assert [worker.status for worker in (read("a"), not_read("b"), no_histogram("c"), starting("d"))] == [
        "ok", "critical", UNKNOWN, None]
    assert starting("d").as_dict()["operations"] == [] and not_read("b").as_dict()["error"] == "worker unreachable"


def test_the_slowest_stage_is_a_pipeline_stage_and_a_saturated_one_is_slowest() -> None:
    worker = WorkerLatency(LiveWorker("a", "http://a:8001"), (
        op("end_to_end", 90.0), op("inference", 30.0), op("commit", 40.0),
        op("inference", 900.0, CheckStatus.CRITICAL, agent_type="momentum"),  # the monitor's probes: not a stage
    ))
    assert worker.slowest_stage == op("commit", 40.0)
    assert worker.over_threshold == (op("inference", 900.0, CheckStatus.CRITICAL, agent_type="momentum"),)
    # Beyond the last finite bucket (1 s): at least 1000 ms, so slower than a stage read at exactly 1000 ms.
    saturated = WorkerLatency(worker.worker, (op("commit", 1000.0), op("aggregate", 1000.0, saturated=True)))
    assert saturated.slowest_stage == op("aggregate", 1000.0, saturated=True)
