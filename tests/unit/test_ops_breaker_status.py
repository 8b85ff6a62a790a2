"""The breaker an operator is shown: the worst state anywhere, and the HTTP view read by code or name."""

from __future__ import annotations

from worker.breaker import BreakerConfig, BreakerState, CircuitBreaker
from worker.ops.breaker_status import BreakerOverview, breaker_state_from_http, worst_breaker_state


def test_open_anywhere_beats_half_open_beats_closed() -> None:
    assert worst_breaker_state([BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN]) is BreakerState.OPEN
    assert worst_breaker_state([BreakerState.CLOSED, BreakerState.HALF_OPEN]) is BreakerState.HALF_OPEN
    assert worst_breaker_state([BreakerState.CLOSED]) is BreakerState.CLOSED
    assert worst_breaker_state([]) is None


def test_http_view_is_read_by_code_then_by_name() -> None:
    assert breaker_state_from_http({"state": "open", "state_code": 2}) is BreakerState.HALF_OPEN  # code wins
    assert breaker_state_from_http({"state": "half_open"}) is BreakerState.HALF_OPEN
    assert breaker_state_from_http({"state": "half-open"}) is BreakerState.HALF_OPEN
    assert breaker_state_from_http({"state": "closed", "state_code": True}) is BreakerState.CLOSED
    assert breaker_state_from_http({}) is None


def test_the_operator_view_of_the_restart_limit_is_the_workers_own() -> None:
    # Five starts with a limit of five leave the breaker closed (the worker opens it on the sixth): the morning check
    # and triage must not call the limit reached before the worker does.
    for restarts in range(0, 9):
        overview = BreakerOverview(published={}, http=None, http_error=None, restarts=restarts, restart_limit=5,
                                   restart_window_s=300.0)
        worker = CircuitBreaker(BreakerConfig(restart_limit=5, restart_window_s=300.0))
        assert overview.over_restart_limit is worker.record_restarts(restarts), restarts
    assert not BreakerOverview({}, None, None, restarts=5, restart_limit=5, restart_window_s=300.0).over_restart_limit
