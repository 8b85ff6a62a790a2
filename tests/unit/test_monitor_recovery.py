"""The monitor's recovery while FAILED: a backlog alone keeps the worker reading; what makes trading unsafe later
opens the breaker, once."""

from __future__ import annotations

import threading
from types import SimpleNamespace

from worker.breaker import BreakerConfig, BreakerState, CircuitBreaker
from worker.health import (
    HealthPolicy,
    HealthState,
    HealthStateMachine,
    check_consumer_lag,
    check_models_loaded,
    check_redis,
)
from worker.monitor import HealthMonitor

T0 = 1_000_000.0


def failed_monitor() -> tuple[HealthMonitor, CircuitBreaker]:
    breaker = CircuitBreaker(BreakerConfig(), clock=lambda: T0)
    monitor = HealthMonitor.__new__(HealthMonitor)  # the method under test needs no Redis and no thread
    monitor.worker = SimpleNamespace(breaker=breaker, breaker_lock=threading.Lock())  # type: ignore[assignment]
    monitor.machine = HealthStateMachine(HealthPolicy(), clock=lambda: T0, initial=HealthState.FAILED)
    monitor._breaker_opened_while_failed = False
    return monitor, breaker


def test_failed_on_the_backlog_keeps_reading_until_the_models_go_then_opens_the_breaker_once() -> None:
    monitor, breaker = failed_monitor()
    backlog = [check_redis(1.0), check_consumer_lag(300.0), check_models_loaded(True)]
    monitor._open_breaker_if_failed_unsafely(backlog)
    assert breaker.state is BreakerState.CLOSED, "the worker drains its backlog"

    unsafe = [check_redis(1.0), check_consumer_lag(300.0), check_models_loaded(False)]
    monitor._open_breaker_if_failed_unsafely(unsafe)
    assert breaker.state is BreakerState.OPEN
    assert "models_loaded" in (breaker.last_reason or "")

    breaker.reset("ops")  # an operator closes it while the state is still FAILED: not reopened on every tick
    monitor._open_breaker_if_failed_unsafely(unsafe)
    assert breaker.state is BreakerState.CLOSED
