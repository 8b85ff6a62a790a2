"""`tacticalctl breaker status | reset | history` from published breaker states, restarts and the alert stream.
(Closing a breaker opened inside a running worker is in test_with_worker.py.)"""

from __future__ import annotations

import json
import time

import pytest
import redis

from tests.cli.conftest import Ctl, WorkerAnswers
from worker.alerts import Severity, publish_alert, recent_alerts
from worker.breaker import (
    BreakerConfig,
    BreakerState,
    CircuitBreaker,
    publish_breaker_state,
    record_restart,
)
from worker.heartbeat import write_heartbeat
from worker.names import BREAKER_RESET_REQUEST_KEY, BREAKER_RESTARTS_KEY


def publish(client: redis.Redis, consumer: str, state: BreakerState) -> None:
    clock = [1000.0]
    breaker = CircuitBreaker(BreakerConfig(failure_threshold=1, reset_timeout_s=1.0), clock=lambda: clock[0])
    if state is not BreakerState.CLOSED:
        breaker.record_failure("model inference raised")
    if state is BreakerState.HALF_OPEN:
        clock[0] += 2.0
        assert breaker.allow()
    assert breaker.state is state
    publish_breaker_state(client, consumer, breaker)
    write_heartbeat(client, consumer, interval_s=5.0, info={})  # as a running worker does; its state counts only then


@pytest.mark.parametrize(("state", "code"), [(BreakerState.CLOSED, 0), (BreakerState.HALF_OPEN, 1),
                                               (BreakerState.OPEN, 2)])
def test_status_exits_by_the_worst_published_state(ctl: Ctl, redis_client: redis.Redis, state: BreakerState,
                                                   code: int) -> None:
    publish(redis_client, "w-a", BreakerState.CLOSED)
    publish(redis_client, "w-b", state)
    result = ctl("breaker", "status")
    assert result.exit_code == code
    assert f"circuit breaker: {state.name.lower()}" in result.stdout
    assert "worker w-b (Redis)" in result.stdout
    assert "HTTP view unavailable" in result.stdout


def test_status_reads_the_http_view_and_restart_count(ctl: Ctl, redis_client: redis.Redis,
                                                       worker_http: tuple[str, WorkerAnswers]) -> None:
    url, answers = worker_http
    answers.set_state(0, circuit_breaker={"state": "half_open", "state_code": 2, "consecutive_failures": 1,
                                          "restart_limit": 4, "restart_window_s": 300.0})
    now = time.time()
    for n in range(3):
        record_restart(redis_client, f"w-{n}", now - n, window_s=300.0)
    result = ctl("breaker", "status", "--json", worker_url=url)
    assert result.exit_code == 1
    doc = json.loads(result.stdout)
    assert set(doc) == {"state", "state_code", "workers", "http", "http_error", "restarts", "restart_limit",
                        "restart_window_s", "next_start_opens"}
    assert (doc["state"], doc["restarts"], doc["restart_limit"], doc["http_error"]) == ("half_open", 3, 4, None)
    assert doc["next_start_opens"] is False


def test_status_closed_at_the_restart_limit_warns_that_the_next_start_opens_it(
    ctl: Ctl, redis_client: redis.Redis, worker_http: tuple[str, WorkerAnswers]
) -> None:
    url, answers = worker_http
    answers.set_state(0, circuit_breaker={"state": "closed", "state_code": 0, "consecutive_failures": 0,
                                          "restart_limit": 3, "restart_window_s": 300.0})
    now = time.time()
    for n in range(3):  # as many starts as the limit: the breaker stays closed, a fourth opens it
        record_restart(redis_client, f"w-{n}", now - n, window_s=300.0)
    result = ctl("breaker", "status", worker_url=url)
    assert result.exit_code == 1, result.output
    said = " ".join(result.stdout.split())
    assert "circuit breaker: closed" in said
    assert "at the restart limit: the next worker start within 300 s opens the breaker" in said
    doc = json.loads(ctl("breaker", "status", "--json", worker_url=url).stdout)
    assert (doc["state"], doc["restarts"], doc["restart_limit"], doc["next_start_opens"]) == ("closed", 3, 3, True)


def test_status_with_no_worker_visible_is_critical(ctl: Ctl) -> None:
    result = ctl("breaker", "status")
    assert result.exit_code == 2
    assert "no worker visible" in result.stderr


def test_reset_dry_run_requests_nothing(ctl: Ctl, redis_client: redis.Redis) -> None:
    publish(redis_client, "w-a", BreakerState.OPEN)
    result = ctl("breaker", "reset")
    assert result.exit_code == 0 and "dry run" in result.stdout
    assert not redis_client.exists(BREAKER_RESET_REQUEST_KEY)
    assert recent_alerts(redis_client, count=5) == []


def test_reset_requests_clears_restarts_and_prints_its_audit_entry(ctl: Ctl, redis_client: redis.Redis) -> None:
    record_restart(redis_client, "w-a", time.time(), window_s=300.0)
    result = ctl("breaker", "reset", "--yes", "--wait", "0", "--json")
    assert result.exit_code == 0
    doc = json.loads(result.stdout)
    audit = recent_alerts(redis_client, count=1)[-1]
    assert doc["audit_id"] == audit.id
    assert (audit.kind, audit.fields["request_id"]) == ("breaker_reset", str(doc["request_id"]))
    assert redis_client.hget(BREAKER_RESET_REQUEST_KEY, "id") == str(doc["request_id"]).encode()
    assert not redis_client.exists(BREAKER_RESTARTS_KEY)


def test_history_lists_breaker_events_only(ctl: Ctl, redis_client: redis.Redis) -> None:
    publish_alert(redis_client, severity=Severity.P0, kind="breaker_open", message="circuit breaker closed → open",
                  source="w-a")
    publish_alert(redis_client, severity=Severity.P1, kind="health_transition", message="health degraded",
                  source="w-a")
    ctl("breaker", "reset", "--yes", "--wait", "0")
    result = ctl("breaker", "history")
    assert result.exit_code == 0
    assert "breaker_open" in result.stdout and "breaker_reset" in result.stdout
    assert "health_transition" not in result.stdout
    doc = json.loads(ctl("breaker", "history", "--json").stdout)
    assert [e["kind"] for e in doc["entries"]] == ["breaker_open", "breaker_reset"]


def test_status_of_a_killed_worker_is_critical_not_its_last_closed(ctl: Ctl, redis_client: redis.Redis) -> None:
    # Killed: its published state lives on for a minute, its heartbeat does not.
    publish_breaker_state(redis_client, "w-killed", CircuitBreaker())
    result = ctl("breaker", "status", "--json")
    assert result.exit_code == 2
    assert json.loads(result.stdout)["workers"] == {}


def test_a_reset_with_no_live_heartbeat_does_not_claim_no_worker_runs(ctl: Ctl, redis_client: redis.Redis) -> None:
    # A worker whose heartbeat lapsed while Redis refused writes is still running, and honours the request later.
    record_restart(redis_client, "w-a", time.time(), window_s=300.0)
    result = ctl("breaker", "reset", "--yes", "--wait", "0")
    assert result.exit_code == 0, result.output
    assert "no running worker" not in result.stdout
    said = " ".join(result.stdout.split())
    assert "no worker with a live heartbeat" in said and "honours the request if its loop runs within 60 s" in said


def test_a_reason_naming_a_key_is_printed_as_it_is(ctl: Ctl, redis_client: redis.Redis) -> None:
    """A Redis refusal names the key it refused (`SET tactical:heartbeat:w-a …`), and `:heartbeat:` is one of Rich's
    emoji codes: the breaker's last reason and its history read `tactical💓w-a`."""
    clock = [1000.0]
    breaker = CircuitBreaker(BreakerConfig(failure_threshold=1, reset_timeout_s=60.0), clock=lambda: clock[0])
    reason = "Redis refused: SET tactical:heartbeat:w-a"
    breaker.record_failure(reason)
    publish_breaker_state(redis_client, "w-a", breaker)
    write_heartbeat(redis_client, "w-a", interval_s=5.0, info={})
    publish_alert(redis_client, severity=Severity.P0, kind="breaker_open", message=f"breaker open: {reason}",
                  source="w-a")
    for args in (("breaker", "status"), ("breaker", "history"), ("alerts",), ("triage", "breaker-open")):
        result = ctl(*args)
        assert "tactical:heartbeat:w-a" in result.stdout, (args, result.stdout)
        assert "\\U0001f493" not in ascii(result.stdout), args
