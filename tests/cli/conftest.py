"""Running `tacticalctl` in-process against the test's Redis, a real HTTP endpoint, or a real worker process."""

from __future__ import annotations

import itertools
import socket
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
from typer.testing import CliRunner, Result

from tacticalctl.app import app
from worker.embedded_redis import free_port
from worker.heartbeat import write_heartbeat
from worker.http_server import HealthServer
from worker.metrics import TacticalMetrics
from worker.process import WorkerProcess

WIDE = {"COLUMNS": "200", "NO_COLOR": "1"}
_names = itertools.count(1)


@dataclass
class Ctl:
    """`tacticalctl` with --redis-url and --worker-url set, as an operator would type it."""

    redis_url: str
    worker_url: str

    def __call__(self, *args: str, worker_url: str | None = None, redis_url: str | None = None) -> Result:
        runner = CliRunner()
        return runner.invoke(
            app,
            ["--redis-url", redis_url or self.redis_url, "--worker-url", worker_url or self.worker_url, *args],
            env=WIDE,
            catch_exceptions=False,
        )


@pytest.fixture
def nobody_url() -> str:
    """An HTTP URL nothing listens on."""
    return f"http://127.0.0.1:{free_port()}"


@pytest.fixture
def hung_worker_url() -> Iterator[str]:
    """An HTTP URL whose port accepts connections (the kernel's backlog) but never answers: a worker that is hung or
    stopped (SIGSTOP), its process alive and holding the port."""
    with socket.create_server(("127.0.0.1", 0), backlog=16) as listener:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"


@pytest.fixture
def ctl(redis_url: str, nobody_url: str) -> Ctl:
    return Ctl(redis_url=redis_url, worker_url=nobody_url)


@dataclass
class WorkerAnswers:
    """The documents the HTTP server serves, shaped as the worker's health monitor prepares them."""

    health: dict[str, Any] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)

    def set_state(self, code: int, **state: Any) -> None:
        name = ("healthy", "degraded", "critical", "failed")[code]
        self.health = {"status": ("pass", "warn", "fail", "fail")[code], "state": name, "state_code": code,
                       "consumer": "host-a:101", "model_version": "v7", "uptime_s": 12.5}
        self.state = {"state": name, "state_code": code, "since": 1_700_000_000.0, "consumer": "host-a:101",
                      "uptime_s": 12.5, "health_checks": [], "recent_transitions": [],
                      "circuit_breaker": {"state": "closed", "state_code": 0, "consecutive_failures": 0,
                                          "restart_count": 1, "restart_limit": 5, "opened_at": None,
                                          "last_reason": None},
                      "model": {"version": "v7", "staleness_s": 30.0}, "lag": {"count": 0, "seconds": 0.0},
                      "window": {"events": 0}, **state}


def counting_worker(consumer: str, duplicates: int, errors: Mapping[str, int] | None = None) -> HealthServer:
    """A worker's real HTTP server whose /metrics says it caught `duplicates` duplicate events and counted `errors`
    (by operation)."""
    answers = WorkerAnswers()
    answers.set_state(0, consumer=consumer)
    answers.health["consumer"] = consumer
    metrics = TacticalMetrics()
    metrics.duplicate_events.inc(duplicates)
    for operation, count in (errors or {}).items():
        metrics.errors.labels(operation=operation).inc(count)
    return HealthServer("127.0.0.1", 0, metrics=metrics, health_snapshot=lambda: answers.health,
                        state_snapshot=lambda: answers.state).start()


@pytest.fixture
def worker_http() -> Iterator[tuple[str, WorkerAnswers]]:
    """The worker's real HTTP server on a free port, answering documents the test sets."""
    answers = WorkerAnswers()
    answers.set_state(0)
    server = HealthServer("127.0.0.1", 0, metrics=TacticalMetrics(), health_snapshot=lambda: answers.health,
                          state_snapshot=lambda: answers.state).start()
    yield server.url, answers
    server.stop()


@pytest.fixture
def serve_worker() -> Iterator[Callable[..., tuple[HealthServer, WorkerAnswers]]]:
    """Workers' real HTTP servers, each on a free port: `serve_worker(consumer, state_code, metrics)` answers /health
    and /health/state as a worker of that name in that state would, /metrics from `metrics` (default: a fresh
    registry); every one is stopped after the test."""
    servers: list[HealthServer] = []

    def serve(consumer: str, state_code: int = 0,
              metrics: TacticalMetrics | None = None) -> tuple[HealthServer, WorkerAnswers]:
        answers = WorkerAnswers()
        answers.set_state(state_code, consumer=consumer)
        answers.health["consumer"] = consumer
        server = HealthServer("127.0.0.1", 0, metrics=metrics or TacticalMetrics(),
                              health_snapshot=lambda: answers.health,
                              state_snapshot=lambda: answers.state).start()
        servers.append(server)
        return server, answers

    yield serve
    for server in servers:
        server.stop()


def beat(client: redis.Redis, consumer: str, http: str | None, *, host: str | None = None) -> None:
    """A live heartbeat of `consumer` (named `host:pid`, beating from `host` if given), naming the HTTP address
    `http` (None: none yet)."""
    named_host, _, pid = consumer.partition(":")
    info: dict[str, object] = {"host": host or named_host, "pid": int(pid)}
    if http is not None:
        info["http"] = http.removeprefix("http://")
    write_heartbeat(client, consumer, interval_s=30.0, info=info)


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """A real `tactical-worker` process with its HTTP on a free port: `start_worker(redis_url, **settings)`."""
    started: list[WorkerProcess] = []

    def start(redis_url: str, *, consumer: str | None = None, **settings: object) -> WorkerProcess:
        name = consumer or f"cli-worker-{next(_names)}"
        process = WorkerProcess(
            redis_url=redis_url,
            consumer=name,
            log_path=tmp_path / f"{name}.log",
            http_addr=f"127.0.0.1:{free_port()}",
            settings={"claim_min_idle_ms": "1000", "claim_interval_ms": "200", "torch_threads": "1",
                      **{k: str(v) for k, v in settings.items()}},
        )
        started.append(process)
        return process.start(wait_ready_s=120)

    yield start
    for process in started:
        process.stop(timeout_s=30)


def worker_url(process: WorkerProcess) -> str:
    return f"http://{process.http_addr}"
