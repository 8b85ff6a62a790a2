"""Reading the worker's answers: /health levels and Prometheus text."""

from __future__ import annotations

import socket
from contextlib import ExitStack

import pytest

from worker.embedded_redis import free_port
from worker.health import CheckStatus
from worker.ops.worker_client import (
    WorkerClient,
    WorkerNotAnswering,
    WorkerUnreachable,
    health_level,
    parse_metrics,
    sample_value,
)

METRICS = """\
# HELP tactical_events_processed_total Events handled
# TYPE tactical_events_processed_total counter
tactical_events_processed_total{outcome="executed",synergy_type="TYPE_1"} 7.0
tactical_events_processed_total{outcome="hold",synergy_type="TYPE_1"} 3.0
# HELP tactical_health_state Health state
# TYPE tactical_health_state gauge
tactical_health_state 1.0
"""


@pytest.mark.parametrize(
    ("status", "body", "level"),
    [
        (200, {"state_code": 0}, CheckStatus.OK),
        (200, {"state_code": 1}, CheckStatus.WARN),
        (503, {"state_code": 2}, CheckStatus.CRITICAL),
        (503, {"state_code": 3}, CheckStatus.CRITICAL),
        (503, {"status": "fail", "error": "health snapshot failed"}, CheckStatus.CRITICAL),
        (200, {"state": "starting"}, CheckStatus.WARN),
        (200, {"state_code": True}, CheckStatus.WARN),
    ],
)
def test_health_answers_map_to_check_levels(status: int, body: dict, level: CheckStatus) -> None:
    assert health_level(status, body) is level


def test_prometheus_text_is_parsed_by_family_with_labelled_samples() -> None:
    families = parse_metrics(METRICS)
    assert set(families) == {"tactical_events_processed", "tactical_health_state"}
    assert sample_value(families, "tactical_events_processed_total", {"outcome": "executed"}) == 7.0
    assert sample_value(families, "tactical_health_state") == 1.0
    assert sample_value(families, "tactical_missing") is None


def test_text_that_is_not_prometheus_is_reported_as_such() -> None:
    with pytest.raises(WorkerUnreachable, match="not Prometheus text"):
        parse_metrics("<html>hello</html>", source="http://x/metrics")


def test_a_port_nobody_listens_on_is_unreachable_and_named() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    client = WorkerClient(url, timeout_s=0.5)
    with pytest.raises(WorkerUnreachable, match=f"{url}/health"):
        client.health()
    with pytest.raises(WorkerUnreachable, match="/metrics"):
        client.metrics()


def test_a_port_nobody_listens_on_is_not_taken_for_a_hung_worker() -> None:
    with pytest.raises(WorkerUnreachable) as raised:
        WorkerClient(f"http://127.0.0.1:{free_port()}", timeout_s=0.5).health()
    assert not isinstance(raised.value, WorkerNotAnswering)


def test_a_hung_worker_whose_connection_queue_is_full_is_still_hung_not_gone() -> None:
    """A stopped worker accepts nothing: the kernel queues connections for it until its backlog is full (every
    scrape adds one), then takes no more. A probe then times out connecting: that is the hung worker still."""
    with socket.create_server(("127.0.0.1", 0), backlog=1) as listener, ExitStack() as held:
        address = listener.getsockname()
        for _ in range(64):  # fill the queue: connect until one is not taken
            probe = held.enter_context(socket.socket())
            probe.settimeout(0.3)
            try:
                probe.connect(address)
            except TimeoutError:
                break
        else:
            pytest.skip("this network stack takes every connection: no queue to fill")
        with pytest.raises(WorkerNotAnswering, match=r"did not take the connection within 0\.5s"):
            WorkerClient(f"http://{address[0]}:{address[1]}", timeout_s=0.5).health()


@pytest.mark.parametrize(("host", "loopback"), [("127.0.0.1", True), ("127.3.0.9", True), ("::1", True),
                                                ("localhost", True), ("localhost.", True), ("::ffff:127.0.0.1", True),
                                                ("10.0.0.7", False), ("tactical-marl", False), (None, False)])
def test_only_a_connection_this_host_does_not_take_is_a_hung_worker_for_sure(host: str | None, loopback: bool) -> None:
    """A connect that times out on this host is a full queue (a hung worker); to another host it may as well be a
    host that is gone, and "hung: do not start another" would be the wrong advice."""
    from worker.ops.worker_client import is_loopback

    assert is_loopback(host) is loopback
