"""The worker's HTTP endpoint over real sockets: status codes, JSON, Prometheus text, misbehaving clients."""

from __future__ import annotations

import http.client
import json
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from importlib.metadata import version
from typing import Any

import pytest

from worker.http_server import HealthServer, HttpServerError
from worker.metrics import TacticalMetrics
from worker.version import build_commit


class Snapshots:
    def __init__(self) -> None:
        self.health: dict[str, Any] = {
            "state": "healthy",
            "state_code": 0,
            "consumer": "host-a:101",
            "model_version": "v7",
            "uptime_s": 12.5,
        }
        self.state: dict[str, Any] = {
            "state": "degraded",
            "state_code": 1,
            "health_checks": {"consumer_lag": {"status": "warn", "value": 2.4, "threshold": 2.0}},
            "recent_transitions": [{"at": "2024-06-03T13:30:00Z", "from": "healthy", "to": "degraded"}],
            "circuit_breaker": {"state": "closed", "state_code": 0},
            "consumer": "host-a:101",
            "model": {"version": "v7", "staleness_s": 42.0},
            "lag": {"messages": float("nan"), "seconds": 2.4},
        }
        self.fail = False

    def health_snapshot(self) -> dict[str, Any]:
        if self.fail:
            raise RuntimeError("worker not started")
        return self.health

    def state_snapshot(self) -> dict[str, Any]:
        if self.fail:
            raise RuntimeError("worker not started")
        return self.state


@pytest.fixture
def snapshots() -> Snapshots:
    return Snapshots()


@pytest.fixture
def metrics() -> TacticalMetrics:
    return TacticalMetrics()


@pytest.fixture
def server(snapshots: Snapshots, metrics: TacticalMetrics) -> Iterator[HealthServer]:
    with HealthServer(
        "127.0.0.1",
        0,
        metrics=metrics,
        health_snapshot=snapshots.health_snapshot,
        state_snapshot=snapshots.state_snapshot,
        request_timeout_s=3.0,
        max_request_bytes=4096,
    ) as running:
        yield running


def request(server: HealthServer, path: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        conn.request(method, path)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def raw_exchange(server: HealthServer, data: bytes) -> bytes:
    """Send raw bytes, then read the answer until the server closes the connection."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(data)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return received


def test_port_zero_picks_a_free_port(server: HealthServer) -> None:
    assert server.port > 0
    assert server.url == f"http://127.0.0.1:{server.port}"


@pytest.mark.parametrize(
    ("code", "http_status", "status"), [(0, 200, "pass"), (1, 200, "warn"), (2, 503, "fail"), (3, 503, "fail")]
)
def test_health_answers_by_state(
    server: HealthServer, snapshots: Snapshots, code: int, http_status: int, status: str
) -> None:
    snapshots.health = {
        **snapshots.health,
        "state_code": code,
        "state": ["healthy", "degraded", "critical", "failed"][code],
    }

    got, headers, body = request(server, "/health")

    assert got == http_status
    assert headers["Content-Type"] == "application/json"
    assert json.loads(body) == {
        "status": status,
        "state": snapshots.health["state"],
        "state_code": code,
        "consumer": "host-a:101",
        "version": version("tactical-marl"),  # the serving process's release and commit
        "commit": build_commit(),
        "model_version": "v7",
        "uptime_s": 12.5,
    }


def test_health_reports_server_uptime_when_the_snapshot_has_none(server: HealthServer, snapshots: Snapshots) -> None:
    del snapshots.health["uptime_s"]
    _, _, body = request(server, "/health")
    assert 0 <= json.loads(body)["uptime_s"] < 60


def test_health_is_503_when_the_snapshot_fails_or_is_invalid(server: HealthServer, snapshots: Snapshots) -> None:
    snapshots.health = {"state": "healthy"}
    got, _, body = request(server, "/health")
    assert got == 503
    assert "state_code" in json.loads(body)["error"]

    snapshots.fail = True
    got, _, body = request(server, "/health")
    assert got == 503
    assert json.loads(body) == {"status": "fail", "error": "health snapshot failed: worker not started"}


def test_health_state_is_the_full_snapshot_with_nan_as_null(server: HealthServer, snapshots: Snapshots) -> None:
    got, _headers, body = request(server, "/health/state")

    assert got == 200
    state = json.loads(body)
    assert state["health_checks"] == snapshots.state["health_checks"]
    assert state["recent_transitions"] == snapshots.state["recent_transitions"]
    assert state["circuit_breaker"] == {"state": "closed", "state_code": 0}
    assert state["lag"] == {"messages": None, "seconds": 2.4}
    assert b"NaN" not in body


def test_health_state_is_500_when_the_snapshot_fails(server: HealthServer, snapshots: Snapshots) -> None:
    snapshots.fail = True
    got, _, body = request(server, "/health/state")
    assert got == 500
    assert "worker not started" in json.loads(body)["error"]


def test_metrics_are_prometheus_text_that_promtool_accepts(server: HealthServer, metrics: TacticalMetrics) -> None:
    metrics.observe_events([0.0012, 0.08], ["TYPE_1", "TYPE_4"], ["executed", "hold"])
    metrics.set_health_state(1)

    got, headers, body = request(server, "/metrics")

    assert got == 200
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    text = body.decode()
    assert 'le="0.075"' in text
    assert 'tactical_events_processed_total{outcome="executed"} 1.0' in text
    assert "tactical_health_state 1.0" in text
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not on PATH")
    result = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True)
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()


def test_query_strings_and_trailing_slashes_reach_the_same_paths(server: HealthServer) -> None:
    assert request(server, "/health/?verbose=1")[0] == 200
    assert request(server, "/metrics?name[]=x")[0] == 200


def test_unknown_path_is_404_with_a_json_body(server: HealthServer) -> None:
    got, headers, body = request(server, "/healthz")
    assert got == 404
    assert headers["Content-Type"] == "application/json"
    assert json.loads(body)["paths"] == ["/health", "/health/state", "/metrics"]


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
def test_other_methods_are_405(server: HealthServer, method: str) -> None:
    got, headers, body = request(server, "/health", method)
    assert got == 405
    assert headers["Allow"] == "GET, HEAD"
    assert "GET or HEAD only" in json.loads(body)["error"]


@pytest.mark.parametrize("path", ["/health", "/health/state", "/metrics", "/nowhere"])
def test_head_answers_as_get_does_without_a_body(server: HealthServer, path: str) -> None:
    """Load balancers and uptime checks often probe with HEAD: the GET's status and headers, no body."""
    got, headers, body = request(server, path, "HEAD")
    get_status, get_headers, get_body = request(server, path, "GET")
    assert got == get_status and body == b""
    assert headers["Content-Type"] == get_headers["Content-Type"]
    if path == "/nowhere":  # the others change between two requests (an uptime, a counter)
        assert int(headers["Content-Length"]) == len(get_body)
    else:
        assert int(headers["Content-Length"]) > 0


def test_malformed_request_line_is_400_in_json(server: HealthServer) -> None:
    response = raw_exchange(server, b"GARBAGE\r\n\r\n")
    assert response.startswith(b"HTTP/1.0 400")
    assert b'"error"' in response


def test_oversized_request_head_is_refused(server: HealthServer) -> None:
    response = raw_exchange(server, b"GET /health HTTP/1.1\r\nX-Filler: " + b"a" * 8000 + b"\r\n\r\n")
    assert response.startswith(b"HTTP/1.0 431")
    assert b"larger than 4096 bytes" in response


def still_open(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        return sock.recv(1) != b""  # data would be odd, but the connection is open
    except BlockingIOError:
        return True
    finally:
        sock.setblocking(True)


def test_silent_and_half_sent_clients_do_not_block_others(server: HealthServer) -> None:
    silent = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    half = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    try:
        half.sendall(b"GET /hea")
        time.sleep(0.05)  # let the server accept both and start waiting on them

        got, _, body = request(server, "/health")

        assert got == 200
        assert json.loads(body)["status"] == "pass"
        assert still_open(silent) and still_open(half)
    finally:
        silent.close()
        half.close()


def test_a_client_that_never_finishes_its_request_is_cut_off(snapshots: Snapshots, metrics: TacticalMetrics) -> None:
    with HealthServer(
        "127.0.0.1",
        0,
        metrics=metrics,
        health_snapshot=snapshots.health_snapshot,
        state_snapshot=snapshots.state_snapshot,
        request_timeout_s=0.2,
    ) as server:
        received = raw_exchange(server, b"GET /health HTTP/1.1\r\n")  # the head never ends
    assert received.startswith(b"HTTP/1.0 408")


def test_connections_beyond_the_limit_are_closed_unanswered(snapshots: Snapshots, metrics: TacticalMetrics) -> None:
    with HealthServer(
        "127.0.0.1",
        0,
        metrics=metrics,
        health_snapshot=snapshots.health_snapshot,
        state_snapshot=snapshots.state_snapshot,
        max_connections=2,
    ) as server:
        idle = [socket.create_connection(("127.0.0.1", server.port), timeout=5) for _ in range(2)]
        try:
            time.sleep(0.05)
            with pytest.raises((ConnectionError, http.client.HTTPException)):
                request(server, "/health")
        finally:
            for sock in idle:
                sock.close()
        deadline = time.monotonic() + 5
        while True:  # the slots free up once the idle clients are gone
            try:
                assert request(server, "/health")[0] == 200
                break
            except (ConnectionError, http.client.HTTPException):
                assert time.monotonic() < deadline
                time.sleep(0.02)


def test_a_busy_port_is_reported_with_what_to_do(
    snapshots: Snapshots, metrics: TacticalMetrics, server: HealthServer
) -> None:
    other = HealthServer(
        "127.0.0.1",
        server.port,
        metrics=metrics,
        health_snapshot=snapshots.health_snapshot,
        state_snapshot=snapshots.state_snapshot,
    )
    with pytest.raises(HttpServerError, match="TACTICAL_HTTP_ADDR"):
        other.start()


def test_stop_closes_the_port(snapshots: Snapshots, metrics: TacticalMetrics) -> None:
    server = HealthServer(
        "127.0.0.1",
        0,
        metrics=metrics,
        health_snapshot=snapshots.health_snapshot,
        state_snapshot=snapshots.state_snapshot,
    ).start()
    port = server.port
    server.stop()
    server.stop()  # idempotent
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
