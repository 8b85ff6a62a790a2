"""How `health --all` and `health state --all` judge the fleet from each worker's answer (`FleetHealth`): no Redis,
no HTTP."""

from __future__ import annotations

import socket

import pytest

from worker.health import CheckStatus
from worker.ops.fleet import STARTING, FleetHealth, LiveWorker, WorkerHealth, WorkerState
from worker.ops.worker_client import WorkerUnreachable


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


def test_a_worker_elsewhere_bound_to_loopback_is_said_to_be_readable_only_where_it_runs() -> None:
    # Outside Docker a worker binds 127.0.0.1:8001 by default: its heartbeat names that address, which from another
    # host is this host's own loopback. "Connection refused" alone sends the operator after a worker that is fine.
    elsewhere = LiveWorker("host-b:202", "http://127.0.0.1:8001", host="host-b", pid=202)
    said = elsewhere.unreachable(WorkerUnreachable("worker unreachable at http://127.0.0.1:8001/health: refused"))
    assert said.startswith("worker unreachable at http://127.0.0.1:8001/health: refused")
    assert "host-b" in said and "loopback" in said and "--http-addr 0.0.0.0" in said
    here = LiveWorker("here:1", "http://127.0.0.1:8001", host=socket.gethostname(), pid=1)
    assert here.unreachable(WorkerUnreachable("refused")) == "refused"
    bound_wide = LiveWorker("host-b:202", "http://host-b:8001", host="host-b", pid=202)
    assert bound_wide.unreachable(WorkerUnreachable("refused")) == "refused"


def state_of(name: str, state_code: int) -> WorkerState:
    state = ("healthy", "degraded", "critical", "failed")[state_code]
    return WorkerState(LiveWorker(name, f"http://{name}:8001", "host", 1), 200,
                       {"state": state, "state_code": state_code, "consumer": name, "lag": {"count": 3}})


@pytest.mark.parametrize(("state_code", "check"), [(0, "ok"), (1, "warn"), (2, "critical"), (3, "critical")])
def test_a_state_document_is_judged_by_its_state_code_and_kept_whole(state_code: int, check: str) -> None:
    # /health/state answers 200 whatever the state: only its code says critical, as `health state` judges one.
    worker = state_of("a", state_code)
    assert worker.as_dict() == {"consumer": "a", "host": "host", "pid": 1, "url": "http://a:8001", "check": check,
                                "error": None, "state": dict(worker.answer or {})}
    assert FleetHealth((worker, state_of("b", 0))).as_dict()["status"] == check


def test_a_state_not_read_is_null_with_why() -> None:
    unread = WorkerState(LiveWorker("b", "http://b:8001"), error="worker unreachable").as_dict()
    assert (unread["state"], unread["check"], unread["error"]) == (None, "critical", "worker unreachable")
    assert WorkerState(LiveWorker("c", None), error=STARTING).as_dict()["check"] is None
