from __future__ import annotations

import pytest
import redis

from worker import stream_entries
from worker.alerts import Severity, read_alerts
from worker.breaker import (
    BreakerConfig,
    BreakerState,
    CircuitBreaker,
    publish_breaker_state,
    read_breaker_states,
    record_restart,
    request_reset,
    restart_count,
    skip_earlier_reset_requests,
    take_reset_request,
)
from worker.embedded_redis import EmbeddedRedis
from worker.names import BREAKER_RESTARTS_KEY, breaker_state_key

NOW = 1_750_000_000.0


def test_restarts_are_counted_across_processes(redis_url: str) -> None:
    first_process = redis.Redis.from_url(redis_url)
    second_process = redis.Redis.from_url(redis_url)
    operator = redis.Redis.from_url(redis_url)
    try:
        assert record_restart(first_process, "host-a:100", NOW, window_s=300) == 1
        assert record_restart(first_process, "host-a:101", NOW + 5, window_s=300) == 2
        assert record_restart(second_process, "host-b:200", NOW + 6, window_s=300) == 3
        assert restart_count(operator, 300, NOW + 10) == 3
    finally:
        for client in (first_process, second_process, operator):
            client.close()


def test_restarts_outside_the_window_are_pruned(redis_client: redis.Redis) -> None:
    record_restart(redis_client, "w:1", NOW - 400, window_s=300)
    record_restart(redis_client, "w:2", NOW - 200, window_s=300)
    assert restart_count(redis_client, 300, NOW) == 1
    assert record_restart(redis_client, "w:3", NOW, window_s=300) == 2
    assert redis_client.zcard(BREAKER_RESTARTS_KEY) == 2
    assert 0 < redis_client.ttl(BREAKER_RESTARTS_KEY) <= 301


def test_restart_count_survives_a_redis_restart(private_redis: EmbeddedRedis) -> None:
    client = redis.Redis.from_url(private_redis.url())
    for number in range(3):
        record_restart(client, f"w:{number}", NOW + number, window_s=300)
    client.close()
    private_redis.restart(kill=False)
    client = redis.Redis.from_url(private_redis.url())
    try:
        assert restart_count(client, 300, NOW + 10) == 3
    finally:
        client.close()


def test_restart_limit_opens_the_breaker_in_a_new_process(redis_client: redis.Redis) -> None:
    config = BreakerConfig(restart_limit=2, restart_window_s=300)
    for number in range(3):
        restarts = record_restart(redis_client, f"w:{number}", NOW + number, window_s=config.restart_window_s)
        fresh = CircuitBreaker(config, clock=lambda: NOW)
        fresh.record_restarts(restarts)
    assert fresh.state is BreakerState.OPEN
    assert "3 worker restarts" in (fresh.last_reason or "")


def test_reset_request_is_taken_once_per_worker_and_audited(redis_client: redis.Redis) -> None:
    record_restart(redis_client, "w:1", NOW, window_s=300)
    assert take_reset_request(redis_client, "worker-a") is None

    request_reset(redis_client, "alice@ops-1")

    assert restart_count(redis_client, 300, NOW) == 0
    assert take_reset_request(redis_client, "worker-a") == "alice@ops-1"
    assert take_reset_request(redis_client, "worker-a") is None
    assert take_reset_request(redis_client, "worker-b") == "alice@ops-1"
    assert take_reset_request(redis_client, "worker-b") is None

    request_reset(redis_client, "bob@ops-2")
    assert take_reset_request(redis_client, "worker-a") == "bob@ops-2"
    assert take_reset_request(redis_client, "worker-b") == "bob@ops-2"
    assert take_reset_request(redis_client, "worker-a") is None

    trail = [a for a in read_alerts(redis_client, count=10) if a.severity == Severity.AUDIT]
    assert [(a.kind, a.actor) for a in trail] == [("breaker_reset", "alice@ops-1"), ("breaker_reset", "bob@ops-2")]
    assert "restart counter cleared" in trail[0].message


def test_a_worker_started_after_a_reset_request_does_not_take_it(redis_client: redis.Redis) -> None:
    request_reset(redis_client, "alice@ops-1")
    skip_earlier_reset_requests(redis_client, "worker-started-later")  # as the worker does at its start
    assert take_reset_request(redis_client, "worker-started-later") is None, "it was for the workers running then"
    request_reset(redis_client, "bob@ops-2")
    assert take_reset_request(redis_client, "worker-started-later") == "bob@ops-2"
    skip_earlier_reset_requests(redis_client, "worker-started-later")  # a start after it honoured one: unchanged
    assert take_reset_request(redis_client, "worker-started-later") is None


def test_a_reset_request_taken_from_redis_closes_a_breaker_and_names_its_actor(redis_url: str) -> None:
    worker_client = redis.Redis.from_url(redis_url)
    cli_client = redis.Redis.from_url(redis_url)
    try:
        breaker = CircuitBreaker(BreakerConfig(failure_threshold=1), clock=lambda: NOW)
        breaker.record_failure("redis timeout")
        assert breaker.state is BreakerState.OPEN

        request_reset(cli_client, "carol@ops-3")
        actor = take_reset_request(worker_client, "host:1")
        assert actor is not None
        breaker.reset(actor)

        assert breaker.state is BreakerState.CLOSED
        assert breaker.recent_transitions[-1].reason == "reset by carol@ops-3"
    finally:
        worker_client.close()
        cli_client.close()


def test_published_breaker_states_are_read_per_consumer(redis_client: redis.Redis) -> None:
    closed = CircuitBreaker(clock=lambda: NOW)
    broken = CircuitBreaker(BreakerConfig(failure_threshold=2), clock=lambda: NOW)
    broken.record_failure("inference error")
    broken.record_failure("inference error")

    publish_breaker_state(redis_client, "host-a:1", closed, now=NOW)
    publish_breaker_state(redis_client, "host-b:2", broken, now=NOW + 1)

    states = read_breaker_states(redis_client)
    assert set(states) == {"host-a:1", "host-b:2"}
    assert states["host-a:1"].state is BreakerState.CLOSED
    assert states["host-a:1"].opened_at is None
    assert states["host-b:2"].state is BreakerState.OPEN
    assert states["host-b:2"].consecutive_failures == 2
    assert states["host-b:2"].opened_at == NOW
    assert "inference error" in (states["host-b:2"].last_reason or "")
    assert states["host-b:2"].updated_at == NOW + 1
    assert states["host-b:2"].as_dict()["state_name"] == "open"
    assert 0 < redis_client.ttl(breaker_state_key("host-b:2")) <= 60


def test_a_later_publish_replaces_the_earlier_state(redis_client: redis.Redis) -> None:
    breaker = CircuitBreaker(BreakerConfig(failure_threshold=1), clock=lambda: NOW)
    breaker.record_failure("boom")
    publish_breaker_state(redis_client, "w:1", breaker, now=NOW)
    breaker.reset("op@host")
    publish_breaker_state(redis_client, "w:1", breaker, now=NOW + 2)
    state = read_breaker_states(redis_client)["w:1"]
    assert state.state is BreakerState.CLOSED
    assert state.opened_at is None


def test_no_states_published(redis_client: redis.Redis) -> None:
    assert read_breaker_states(redis_client) == {}


def test_the_monitor_publishes_each_kept_breaker_transition_once_after_alerts_failed(
    redis_url: str, monkeypatch
) -> None:
    import threading
    from types import SimpleNamespace

    import worker.monitor as monitor_module
    from worker.monitor import HealthMonitor
    from worker.names import ALERTS_STREAM
    from worker.settings import WorkerSettings

    breaker = CircuitBreaker(BreakerConfig(failure_threshold=1, history=2))
    worker = SimpleNamespace(settings=WorkerSettings(redis_url=redis_url, consumer="monitor-test"), breaker=breaker,
                             breaker_lock=threading.Lock())
    monitor = HealthMonitor(worker)  # type: ignore[arg-type]  # only its breaker alerts are exercised
    client = redis.Redis.from_url(redis_url)
    publish = monitor_module.publish_alert
    try:
        monkeypatch.setattr(monitor_module, "publish_alert",
                            lambda *a, **k: (_ for _ in ()).throw(redis.ConnectionError("Redis is down")))
        breaker.record_failure("first")
        monitor._flush_alerts()  # alerts cannot be sent: owed, not counted
        for n in range(2):  # 5 transitions in all, only the last 2 kept
            breaker.reset(f"op{n}")
            breaker.record_failure(f"again {n}")
        monkeypatch.setattr(monitor_module, "publish_alert", publish)
        for _ in range(3):
            monitor._flush_alerts()

        messages = [fields[b"message"].decode() for _, fields in stream_entries.entries(client, ALERTS_STREAM)
                    if fields[b"kind"].startswith(b"breaker")]
        assert messages == [
            "circuit breaker open → closed: reset by op1",
            "circuit breaker closed → open: 1 consecutive failures, last: again 1",
        ], "the 2 kept, each once; the 3 no longer kept are skipped, not re-sent"
    finally:
        client.close()
        monitor.client.close()


@pytest.mark.parametrize("health_first", [True, False])
def test_alerts_held_through_an_outage_go_out_in_the_order_they_happened(
    redis_url: str, monkeypatch, health_first: bool
) -> None:
    """A health transition and a breaker transition both held while Redis was down: published oldest first, so the
    audit trail reads as it happened (before, every breaker alert went out ahead of the health alerts)."""
    import threading
    import time
    from types import SimpleNamespace

    import worker.monitor as monitor_module
    from worker.monitor import HealthMonitor
    from worker.names import ALERTS_STREAM
    from worker.settings import WorkerSettings

    clock = [time.time() - 60.0]
    breaker = CircuitBreaker(BreakerConfig(failure_threshold=1), clock=lambda: clock[0])
    worker = SimpleNamespace(settings=WorkerSettings(redis_url=redis_url, consumer="order-test"), breaker=breaker,
                             breaker_lock=threading.Lock())
    monitor = HealthMonitor(worker)  # type: ignore[arg-type]  # only its alerts are exercised
    client = redis.Redis.from_url(redis_url)
    client.delete(ALERTS_STREAM)
    publish = monitor_module.publish_alert
    health = {"severity": Severity.P0, "kind": "health_transition", "message": "health healthy → critical",
              "source": "order-test", "from_state": "healthy", "to_state": "critical"}
    try:
        monkeypatch.setattr(monitor_module, "publish_alert",
                            lambda *a, **k: (_ for _ in ()).throw(redis.ConnectionError("Redis is down")))
        if health_first:
            monitor._unsent_alerts.append({**health, "at": clock[0]})
            clock[0] += 5.0
            breaker.record_failure("Redis down")
        else:
            breaker.record_failure("Redis down")
            clock[0] += 5.0
            monitor._unsent_alerts.append({**health, "at": clock[0]})
        monitor._flush_alerts()
        monkeypatch.setattr(monitor_module, "publish_alert", publish)
        monitor._flush_alerts()

        kinds = [fields[b"kind"].decode() for _, fields in stream_entries.entries(client, ALERTS_STREAM)]
        expected = ["health_transition", "breaker_open"]
        assert kinds == (expected if health_first else expected[::-1])
    finally:
        client.close()
        monitor.client.close()


def test_the_operator_sees_only_the_breakers_of_workers_with_a_live_heartbeat(redis_url: str) -> None:
    # A killed worker's published state lives on for its TTL (a minute): it must not show as a running "closed".
    from worker.heartbeat import write_heartbeat
    from worker.ops.breaker_status import read_breaker_overview

    client = redis.Redis.from_url(redis_url)
    try:
        opened = CircuitBreaker(BreakerConfig(failure_threshold=1))
        opened.record_failure("redis timeout")
        publish_breaker_state(client, "killed:1", CircuitBreaker())
        publish_breaker_state(client, "running:2", opened)
        write_heartbeat(client, "running:2", interval_s=5.0, info={})

        overview = read_breaker_overview(client, http=None)

        assert list(overview.published) == ["running:2"]
        assert overview.state is BreakerState.OPEN
    finally:
        client.close()


def test_a_state_hash_no_worker_wrote_is_left_out_not_a_traceback(redis_client: redis.Redis) -> None:
    # `tacticalctl breaker status|reset` died on these; a live worker rewrites its own hash with every heartbeat.
    publish_breaker_state(redis_client, "good:1", CircuitBreaker(clock=lambda: NOW), now=NOW)
    redis_client.hset(breaker_state_key("bad:2"), mapping={"state": "7"})
    redis_client.hset(breaker_state_key("bad:3"), mapping={"updated_at": "x"})
    redis_client.set(breaker_state_key("bad:4"), "open")  # not even a hash: HGETALL is refused for it alone
    assert set(read_breaker_states(redis_client)) == {"good:1"}
