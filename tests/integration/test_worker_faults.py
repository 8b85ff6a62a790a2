"""Faults injected into a real worker (in this process, real Redis): a failing or slow model."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
import redis

from tests.events import many_events
from tests.faults import FaultyModel
from tests.integration.streams import decided_ids, pending_count, wait_for, wait_settled
from worker import stream_entries
from worker.alerts import Alert, recent_alerts
from worker.breaker import request_reset
from worker.names import CONSUMER_GROUP, DECISIONS_STREAM, INPUT_STREAM
from worker.producer import publish_events
from worker.service import Worker
from worker.settings import WorkerSettings


@pytest.fixture
def running_worker(redis_url: str) -> Iterator[tuple[Worker, FaultyModel]]:
    settings = WorkerSettings.from_env(
        {}, redis_url=redis_url, consumer="in-process", http_addr="127.0.0.1:0", batch_size=1,
        breaker_failure_threshold=3, breaker_reset_timeout_s=30.0, claim_min_idle_ms=500, claim_interval_ms=200,
        health_interval_s=0.1, health_recovery_s=0.5, stats_window_s=2.0,
    )
    worker = Worker(settings)
    worker.startup()
    assert worker.ensemble is not None and worker.pipeline is not None
    model = FaultyModel(worker.ensemble)
    worker.pipeline.ensemble = model  # type: ignore[assignment]  # a stand-in with the ensemble's infer
    loop = threading.Thread(target=worker.main_loop, daemon=True)
    loop.start()
    yield worker, model
    worker.state.should_exit = True
    loop.join(timeout=30)
    worker.shutdown()


def events(n: int, prefix: str):
    return many_events(n, prefix=prefix, seed=5)


def test_injected_failures_open_the_breaker_and_a_reset_lets_the_events_through(running_worker, redis_client):
    worker, model = running_worker
    model.fail = True
    publish_events(redis_client, events(10, "fail"))
    wait_for(lambda: worker.breaker.state.name == "OPEN", what="breaker open after 3 consecutive failures")
    time.sleep(0.5)
    assert redis_client.xlen(DECISIONS_STREAM) == 0
    assert pending_count(redis_client) == 3, "the failed entries stay pending, none lost"
    assert redis_client.xinfo_groups(INPUT_STREAM)[0]["lag"] == 7, "the rest wait in the stream"
    wait_for(lambda: worker.monitor.state_doc["circuit_breaker"]["state"] == "open", what="breaker visible")
    assert worker.monitor.state_doc["circuit_breaker"]["restart_count"] == 1  # its own start

    model.fail = False
    request_reset(redis_client, "test@ci")  # as `tacticalctl breaker reset` does, from another client
    wait_settled(redis_client, 10)
    assert decided_ids(redis_client) == {f"fail-{i}".encode(): 1 for i in range(10)}
    assert worker.breaker.state.name == "CLOSED"
    # The reset cleared the restart counter in Redis; /health/state says so instead of the count at start.
    wait_for(lambda: worker.monitor.state_doc["circuit_breaker"]["restart_count"] == 0, what="restarts cleared")
    consumers = redis_client.xinfo_consumers(INPUT_STREAM, CONSUMER_GROUP)
    assert all(c["pending"] == 0 for c in consumers)


def test_a_slow_path_makes_health_critical_and_recovery_brings_it_back(running_worker, redis_client):
    worker, model = running_worker
    model.delay_s = 0.15
    publish_events(redis_client, events(5, "slow"))
    wait_for(lambda: worker.monitor.machine.state.name == "CRITICAL", what="critical on P99 > 100 ms")
    latency = next(c for c in worker.monitor.state_doc["health_checks"] if c["name"] == "latency")
    assert latency["status"] == "critical" and latency["value"] > 100
    model.delay_s = 0.0
    publish_events(redis_client, events(5, "fast"))
    wait_for(lambda: worker.monitor.machine.state.name == "HEALTHY", timeout_s=30, what="healthy after recovery")
    transitions = worker.monitor.machine.recent_transitions
    moves = [(t.from_state.name, t.to_state.name) for t in transitions]
    # Down one step at a time once the checks hold. Up by the latency check (straight from healthy, or through
    # degraded when a tick saw the P50 over its bar before the P99 over its: under load, both happen).
    assert moves[-2:] == [("CRITICAL", "DEGRADED"), ("DEGRADED", "HEALTHY")], moves
    into_critical = [t for t in transitions if t.to_state.name == "CRITICAL"]
    assert into_critical and "latency" in into_critical[-1].reason, moves
    client = redis.Redis.from_url(worker.settings.redis_url)
    kinds = [f[b"kind"] for _, f in stream_entries.entries(client, "tactical_alerts")]
    assert kinds.count(b"health_transition") >= 3
    client.close()


@pytest.mark.parametrize("operation", ["heartbeat", "reclaim"])
def test_redis_failing_in_the_periodic_work_is_counted_under_its_operation(running_worker, redis_client,
                                                                           operation: str) -> None:
    """An injected connection error in the heartbeat or the reclaim is that operation's error, not a read's; the
    worker reconnects and goes on deciding."""
    worker, _ = running_worker
    registry = worker.telemetry.metrics.registry

    def errors(label: str) -> float | None:
        return registry.get_sample_value("tactical_errors_total", {"operation": label})

    if operation == "heartbeat":
        target, name = worker.heartbeat, "beat_if_due"
    else:
        target, name = worker, "reclaim_stale_entries"
    original = getattr(target, name)
    calls: list[int] = []

    def fail_once(*args: Any, **kwargs: Any) -> Any:
        if not calls:
            calls.append(1)
            raise redis.ConnectionError(f"injected failure in {operation}")
        return original(*args, **kwargs)

    setattr(target, name, fail_once)
    wait_for(lambda: errors(operation) == 1, what=f"{operation} error counted")
    assert errors("read") == 0
    publish_events(redis_client, events(5, f"after-{operation}"))
    wait_settled(redis_client, 5)


def test_a_breaker_opened_while_redis_is_down_is_logged_then_and_its_alert_keeps_that_time(
    private_redis, in_process_worker, caplog: pytest.LogCaptureFixture
) -> None:
    # The on-call engineer reads the log and the alerts afterwards: both must say when the breaker opened, not when
    # Redis came back (an alert waits for Redis; the log line must not).
    worker, _ = in_process_worker(private_redis.url(), "outage", health_interval_s=0.1)
    caplog.set_level(logging.ERROR, logger="tactical.monitor")
    private_redis.stop()
    with worker.breaker_lock:
        worker.breaker.force_open("test: opened during the outage")
    opened_at = time.time()
    wait_for(lambda: any("circuit breaker open: test: opened during the outage" in r.getMessage()
                         for r in caplog.records), what="the transition logged while Redis is down")
    time.sleep(1.5)  # the alert, held back meanwhile, is published late
    private_redis.start()
    client = redis.Redis.from_url(private_redis.url())

    def opened() -> list[Alert]:
        return [a for a in recent_alerts(client, count=50) if a.kind == "breaker_open"]
    wait_for(lambda: opened(), timeout_s=30, what="the breaker alert published once Redis is back")
    [alert] = opened()
    happened = datetime.fromisoformat(alert.ts.replace("Z", "+00:00")).timestamp()
    published = datetime.fromisoformat(alert.fields["published_ts"].replace("Z", "+00:00")).timestamp()
    assert abs(happened - opened_at) < 0.5 and published - happened >= 1.5, (alert.ts, alert.fields)
