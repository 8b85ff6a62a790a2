"""The breaker an operator is shown: the worst state anywhere, and the HTTP view read by code or name."""

from __future__ import annotations

from worker.breaker import BreakerState
from worker.ops.breaker_status import breaker_state_from_http, worst_breaker_state


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
