from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.breaker import (
    BREAKER_TRANSITIONS,
    BreakerConfig,
    BreakerState,
    CircuitBreaker,
)
from worker.settings import WorkerSettings


class ManualClock:
    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def breaker(threshold: int = 3, timeout_s: float = 30.0) -> tuple[CircuitBreaker, ManualClock]:
    clock = ManualClock()
    return CircuitBreaker(BreakerConfig(failure_threshold=threshold, reset_timeout_s=timeout_s), clock=clock), clock


def opened(threshold: int = 3) -> tuple[CircuitBreaker, ManualClock]:
    cb, clock = breaker(threshold)
    for _ in range(threshold):
        cb.record_failure("redis timeout")
    return cb, clock


def test_n_consecutive_failures_open_it() -> None:
    cb, clock = breaker(threshold=3)
    cb.record_failure("a")
    cb.record_failure("b")
    assert cb.state is BreakerState.CLOSED
    assert cb.allow()
    cb.record_failure("model error")
    assert cb.state is BreakerState.OPEN
    assert cb.consecutive_failures == 3
    assert cb.opened_at == clock.now
    assert cb.last_reason is not None and "model error" in cb.last_reason
    [transition] = cb.recent_transitions
    assert (transition.from_state, transition.to_state) == (BreakerState.CLOSED, BreakerState.OPEN)
    assert "3 consecutive failures" in transition.reason


def test_a_success_in_between_resets_the_count() -> None:
    cb, _ = breaker(threshold=3)
    for _ in range(5):
        cb.record_failure("flaky")
        cb.record_failure("flaky")
        cb.record_success()
    assert cb.state is BreakerState.CLOSED
    assert cb.consecutive_failures == 0


def test_idle_turns_in_between_keep_the_count() -> None:
    # Sparse traffic: every event fails, with empty reads between them. Those prove nothing either way.
    cb, _ = breaker(threshold=3)
    for _ in range(2):
        assert cb.allow()
        cb.record_failure("boom")
        assert cb.allow()
        cb.record_idle()
    assert cb.state is BreakerState.CLOSED and cb.consecutive_failures == 2
    assert cb.allow()
    cb.record_failure("boom")
    assert cb.state is BreakerState.OPEN


def test_a_half_open_trial_that_found_no_event_waits_for_one() -> None:
    cb, clock = opened()
    clock.advance(30)
    assert cb.allow() and cb.state is BreakerState.HALF_OPEN
    cb.record_idle()  # the trial read found nothing: not closed, and the next turn may try again
    assert cb.state is BreakerState.HALF_OPEN
    assert cb.allow()
    cb.record_success()
    assert cb.state is BreakerState.CLOSED


def test_open_rejects_until_the_timeout() -> None:
    cb, clock = opened()
    assert not cb.allow()
    clock.advance(29.9)
    assert not cb.allow()
    assert cb.state is BreakerState.OPEN


def test_after_the_timeout_half_open_lets_exactly_one_trial_through() -> None:
    cb, clock = opened()
    clock.advance(30)
    assert cb.allow()
    assert cb.state is BreakerState.HALF_OPEN
    assert not cb.allow()
    assert not cb.allow()


def test_a_successful_trial_closes_it() -> None:
    cb, clock = opened()
    clock.advance(30)
    assert cb.allow()
    cb.record_success()
    assert cb.state is BreakerState.CLOSED
    assert cb.opened_at is None and cb.last_reason is None
    assert cb.allow()
    assert [t.to_state for t in cb.recent_transitions] == [
        BreakerState.OPEN,
        BreakerState.HALF_OPEN,
        BreakerState.CLOSED,
    ]


def test_a_failed_trial_reopens_it_for_another_timeout() -> None:
    cb, clock = opened()
    clock.advance(30)
    assert cb.allow()
    cb.record_failure("still broken")
    assert cb.state is BreakerState.OPEN
    assert cb.opened_at == clock.now
    assert "trial failed: still broken" in cb.recent_transitions[-1].reason
    clock.advance(29)
    assert not cb.allow()
    clock.advance(1)
    assert cb.allow()


def test_an_unanswered_trial_is_taken_as_lost_after_the_timeout() -> None:
    cb, clock = opened()
    clock.advance(30)
    assert cb.allow()
    clock.advance(10)
    assert not cb.allow()
    clock.advance(20)
    assert cb.allow()
    assert cb.state is BreakerState.HALF_OPEN


def test_force_open_and_operator_reset() -> None:
    cb, clock = breaker()
    cb.force_open("health FAILED")
    assert cb.state is BreakerState.OPEN
    assert cb.last_reason == "health FAILED"
    clock.advance(20)
    cb.force_open("still FAILED")  # re-arms the timeout
    clock.advance(20)
    assert not cb.allow()
    cb.reset("alice@ops-1")
    assert cb.state is BreakerState.CLOSED
    assert cb.consecutive_failures == 0
    assert cb.last_reason is None  # status no longer shows why it was open; the transitions do
    assert cb.recent_transitions[-1].reason == "reset by alice@ops-1"
    assert cb.allow()


def test_an_open_breaker_keeps_its_reason_when_an_earlier_commit_settles() -> None:
    cb, _ = breaker()
    cb.force_open("health recovery: redis critical")
    cb.record_success()  # the commit in flight when it opened, read afterwards
    assert cb.state is BreakerState.OPEN and cb.last_reason == "health recovery: redis critical"


def test_reset_of_a_closed_breaker_only_forgets_failures() -> None:
    cb, _ = breaker(threshold=3)
    cb.record_failure("x")
    cb.record_failure("x")
    cb.reset("bob@host")
    assert cb.last_reason is None
    cb.record_failure("x")
    assert cb.state is BreakerState.CLOSED and cb.last_reason == "x"
    assert cb.recent_transitions == []
    cb.record_success()
    assert cb.consecutive_failures == 0 and cb.last_reason is None


def test_restarts_past_the_limit_open_it() -> None:
    cb = CircuitBreaker(BreakerConfig(restart_limit=5, restart_window_s=300))
    assert not cb.record_restarts(5)
    assert cb.state is BreakerState.CLOSED
    assert cb.record_restarts(6)
    assert cb.state is BreakerState.OPEN
    assert cb.last_reason == "6 worker restarts within 300 s exceed the limit of 5"


def test_config_defaults_come_from_worker_settings() -> None:
    config = BreakerConfig()
    defaults = WorkerSettings(consumer="c", models_dir=".")  # type: ignore[arg-type]
    assert config == BreakerConfig.from_settings(defaults)
    custom = BreakerConfig.from_settings(defaults.with_changes(breaker_failure_threshold=2))
    assert custom.failure_threshold == 2
    with pytest.raises(ValueError, match="failure_threshold"):
        BreakerConfig(failure_threshold=0)


operations = st.lists(
    st.one_of(
        st.just(("allow",)),
        st.just(("success",)),
        st.just(("failure",)),
        st.just(("force_open",)),
        st.just(("reset",)),
        st.tuples(st.just("advance"), st.floats(min_value=0, max_value=40)),
    ),
    max_size=40,  # fewer moves than the recorded history, so the whole chain is checked
)


@settings(max_examples=200, deadline=None)
@given(operations)
def test_every_move_is_in_the_table_and_the_state_is_consistent(ops: list[tuple]) -> None:
    cb, clock = breaker(threshold=2, timeout_s=30)
    for op in ops:
        if op[0] == "allow":
            allowed = cb.allow()
            if cb.state is BreakerState.OPEN:
                assert not allowed
        elif op[0] == "success":
            cb.record_success()
        elif op[0] == "failure":
            cb.record_failure("boom")
        elif op[0] == "force_open":
            cb.force_open("forced")
        elif op[0] == "reset":
            cb.reset("op@host")
        else:
            clock.advance(op[1])
        assert (cb.opened_at is None) == (cb.state is BreakerState.CLOSED)
    previous = BreakerState.CLOSED
    for transition in cb.recent_transitions:
        assert transition.from_state is previous
        assert transition.to_state in BREAKER_TRANSITIONS[transition.from_state]
        previous = transition.to_state
    assert previous is cb.state


def test_transitions_owed_to_a_publisher_are_each_handed_out_once_even_beyond_the_kept_history() -> None:
    clock = ManualClock()
    cb = CircuitBreaker(BreakerConfig(failure_threshold=1, reset_timeout_s=30.0, history=4), clock=clock)
    assert cb.transitions_since(0) == (0, [])
    for n in range(3):  # open, then reset: 6 transitions, 4 kept
        cb.record_failure(f"failure {n}")
        cb.reset(f"op{n}")

    lost, owed = cb.transitions_since(0)
    assert lost == 2 and [t.reason for t in owed] == [
        "1 consecutive failures, last: failure 1", "reset by op1", "1 consecutive failures, last: failure 2",
        "reset by op2",
    ]
    lost, owed = cb.transitions_since(5)
    assert lost == 0 and [t.reason for t in owed] == ["reset by op2"]
    assert cb.transitions_since(6) == (0, [])
    # A publisher that stopped after 2 of 6 (alerts could not be sent) is owed 4, all still kept; one that
    # handled none has 2 that are gone: skipping them, it never sends a kept transition twice.
    assert [t.reason for t in cb.transitions_since(2)[1]] == [t.reason for t in cb.transitions_since(0)[1]]
