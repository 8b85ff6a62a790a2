from __future__ import annotations

import itertools

import pytest

from worker.alerts import Severity
from worker.breaker import BreakerState
from worker.health import (
    HEALTH_TRANSITIONS,
    CheckName,
    CheckStatus,
    HealthCheck,
    HealthPolicy,
    HealthState,
    HealthStateMachine,
    IllegalHealthTransition,
    RecoveryAction,
    Thresholds,
    check_breaker,
    check_confidence,
    check_consumer_lag,
    check_error_rate,
    check_event_rate,
    check_latency,
    check_model_staleness,
    check_models_loaded,
    check_redis,
    state_for,
)

T0 = 1_000_000.0
POLICY = HealthPolicy(recovery_s=30.0, failed_after_s=300.0, history=100)


def all_ok() -> list[HealthCheck]:
    return [
        check_redis(0.5),
        check_consumer_lag(0.0),
        check_latency(5.0, 20.0),
        check_error_rate(0.0),
        check_model_staleness(60.0),
        check_models_loaded(True),
        check_breaker(BreakerState.CLOSED),
        check_confidence(0.8),
    ]


def with_check(replacement: HealthCheck) -> list[HealthCheck]:
    return [replacement if check.name == replacement.name else check for check in all_ok()]


def machine(initial: HealthState = HealthState.HEALTHY) -> HealthStateMachine:
    return HealthStateMachine(POLICY, clock=lambda: T0, initial=initial)


# ---- checks at the runbook's thresholds ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("check", "expected"),
    [
        (lambda: check_redis(None), CheckStatus.CRITICAL),
        (lambda: check_redis(10.0), CheckStatus.OK),
        (lambda: check_redis(10.01), CheckStatus.WARN),
        (lambda: check_redis(50.0), CheckStatus.WARN),
        (lambda: check_redis(50.01), CheckStatus.CRITICAL),
        (lambda: check_consumer_lag(0.0), CheckStatus.OK),
        (lambda: check_consumer_lag(2.0), CheckStatus.OK),
        (lambda: check_consumer_lag(2.001), CheckStatus.WARN),
        (lambda: check_consumer_lag(5.0), CheckStatus.WARN),
        (lambda: check_consumer_lag(5.001), CheckStatus.CRITICAL),
        (lambda: check_consumer_lag(None), CheckStatus.WARN),
        (lambda: check_latency(50.0, 100.0), CheckStatus.OK),
        (lambda: check_latency(50.01, 60.0), CheckStatus.WARN),
        (lambda: check_latency(10.0, 100.01), CheckStatus.CRITICAL),
        (lambda: check_latency(80.0, 150.0), CheckStatus.CRITICAL),
        (lambda: check_latency(None, None), CheckStatus.OK),
        (lambda: check_error_rate(0.05), CheckStatus.OK),
        (lambda: check_error_rate(0.0501), CheckStatus.WARN),
        (lambda: check_error_rate(None), CheckStatus.OK),
        (lambda: check_model_staleness(900.0), CheckStatus.OK),
        (lambda: check_model_staleness(900.1), CheckStatus.CRITICAL),
        (lambda: check_model_staleness(None), CheckStatus.WARN),
        (lambda: check_models_loaded(True), CheckStatus.OK),
        (lambda: check_models_loaded(False), CheckStatus.CRITICAL),
        (lambda: check_breaker(BreakerState.CLOSED), CheckStatus.OK),
        (lambda: check_breaker(BreakerState.HALF_OPEN), CheckStatus.WARN),
        (lambda: check_breaker(BreakerState.OPEN), CheckStatus.CRITICAL),
        (lambda: check_confidence(0.6), CheckStatus.OK),
        (lambda: check_confidence(0.5999), CheckStatus.WARN),
        (lambda: check_confidence(None), CheckStatus.OK),
    ],
)
def test_check_status_at_and_just_past_threshold(check, expected: CheckStatus) -> None:
    assert check().status is expected


def test_event_rate_is_judged_only_with_work_waiting() -> None:
    assert check_event_rate(0.0, backlog=0).status is CheckStatus.OK  # idle stream
    assert check_event_rate(0.0, backlog=None).status is CheckStatus.OK  # backlog unknown
    assert check_event_rate(10.0, backlog=49).status is CheckStatus.OK  # less than one second of work
    assert check_event_rate(49.9, backlog=50).status is CheckStatus.WARN
    assert check_event_rate(50.0, backlog=5000).status is CheckStatus.OK


def test_check_reports_value_threshold_and_an_actionable_message() -> None:
    check = check_consumer_lag(6.25)
    assert check.name == CheckName.CONSUMER_LAG
    assert check.value == 6.25
    assert check.threshold == 5.0
    assert "6.2 s > 5 s" in check.message
    assert check.as_dict() == {
        "name": "consumer_lag",
        "status": "critical",
        "value": 6.25,
        "threshold": 5.0,
        "message": check.message,
    }


def test_thresholds_are_configurable() -> None:
    strict = Thresholds(lag_warn_s=0.5, lag_critical_s=1.0)
    assert check_consumer_lag(0.75, strict).status is CheckStatus.WARN
    assert check_consumer_lag(0.75).status is CheckStatus.OK
    with pytest.raises(ValueError, match="lag_warn_s"):
        Thresholds(lag_warn_s=6.0, lag_critical_s=5.0)


def test_state_is_the_worst_check() -> None:
    assert state_for(all_ok()) is HealthState.HEALTHY
    assert state_for(with_check(check_confidence(0.4))) is HealthState.DEGRADED
    assert state_for([*with_check(check_confidence(0.4)), check_redis(None)]) is HealthState.CRITICAL


# ---- transition table ------------------------------------------------------------------------------------------

LEGAL = [(a, b) for a, targets in HEALTH_TRANSITIONS.items() for b in targets]
ILLEGAL = [(a, b) for a, b in itertools.product(HealthState, HealthState) if (a, b) not in LEGAL]


@pytest.mark.parametrize(("start", "target"), LEGAL)
def test_legal_move_is_made_and_recorded(start: HealthState, target: HealthState) -> None:
    sm = machine(start)
    transition = sm.move_to(target, "operator forced", now=T0 + 1)
    assert sm.state is target
    assert (transition.from_state, transition.to_state, transition.reason, transition.at) == (
        start,
        target,
        "operator forced",
        T0 + 1,
    )
    assert sm.recent_transitions == [transition]


@pytest.mark.parametrize(("start", "target"), ILLEGAL)
def test_illegal_move_raises_and_changes_nothing(start: HealthState, target: HealthState) -> None:
    sm = machine(start)
    with pytest.raises(IllegalHealthTransition, match=f"from {start.name} to {target.name}"):
        sm.move_to(target, "bad", now=T0)
    assert sm.state is start
    assert sm.recent_transitions == []


def test_recovery_is_one_step_at_a_time_in_the_table() -> None:
    assert HealthState.HEALTHY not in HEALTH_TRANSITIONS[HealthState.CRITICAL]
    assert HealthState.HEALTHY not in HEALTH_TRANSITIONS[HealthState.FAILED]


# ---- hysteresis ------------------------------------------------------------------------------------------------


def test_escalation_is_immediate_and_skips_states() -> None:
    sm = machine()
    transitions = sm.evaluate(with_check(check_consumer_lag(7.0)), now=T0)
    assert sm.state is HealthState.CRITICAL
    [transition] = transitions
    assert (transition.from_state, transition.to_state) == (HealthState.HEALTHY, HealthState.CRITICAL)
    assert "consumer_lag critical" in transition.reason


def test_deescalation_waits_recovery_s_and_steps_down_one_state_at_a_time() -> None:
    sm = machine()
    sm.evaluate(with_check(check_redis(None)), now=T0)
    assert sm.state is HealthState.CRITICAL

    assert sm.evaluate(all_ok(), now=T0 + 1) == []
    assert sm.evaluate(all_ok(), now=T0 + 30.9) == []
    assert sm.state is HealthState.CRITICAL

    [down] = sm.evaluate(all_ok(), now=T0 + 31)
    assert (down.from_state, down.to_state) == (HealthState.CRITICAL, HealthState.DEGRADED)
    assert down.actions == ()

    assert sm.evaluate(all_ok(), now=T0 + 60) == []
    [down] = sm.evaluate(all_ok(), now=T0 + 61)
    assert (down.from_state, down.to_state) == (HealthState.DEGRADED, HealthState.HEALTHY)
    assert sm.transitions_total == 3


def test_the_snapshot_says_when_the_next_step_down_is_due() -> None:
    sm = machine()
    sm.evaluate(with_check(check_redis(None)), now=T0)
    assert sm.snapshot()["recovery"] is None  # the checks call for this state: nothing to recover from

    sm.evaluate(all_ok(), now=T0 + 1)
    assert sm.snapshot()["recovery"] == {"to": "degraded", "better_since": T0 + 1, "next_step_at": T0 + 31}
    sm.evaluate(all_ok(), now=T0 + 31)
    assert sm.state is HealthState.DEGRADED
    assert sm.recovery() == {"to": "healthy", "better_since": T0 + 31, "next_step_at": T0 + 61}

    sm.evaluate(with_check(check_confidence(0.3)), now=T0 + 40)  # a relapse to degraded: no longer recovering
    assert sm.recovery() is None
    sm.evaluate(all_ok(), now=T0 + 41)
    sm.evaluate(all_ok(), now=T0 + 71)
    assert sm.state is HealthState.HEALTHY and sm.recovery() is None


def test_a_relapse_restarts_the_recovery_clock() -> None:
    sm = machine()
    sm.evaluate(with_check(check_confidence(0.3)), now=T0)
    sm.evaluate(all_ok(), now=T0 + 10)
    sm.evaluate(with_check(check_confidence(0.3)), now=T0 + 20)  # back to degraded: the better state did not hold
    assert sm.evaluate(all_ok(), now=T0 + 45) == []
    assert sm.evaluate(all_ok(), now=T0 + 74) == []
    [down] = sm.evaluate(all_ok(), now=T0 + 75)
    assert down.to_state is HealthState.HEALTHY


def test_partial_recovery_steps_down_to_the_state_the_checks_call_for() -> None:
    sm = machine()
    sm.evaluate(with_check(check_redis(None)), now=T0)
    degraded = with_check(check_error_rate(0.2))
    sm.evaluate(degraded, now=T0 + 1)
    [down] = sm.evaluate(degraded, now=T0 + 31)
    assert down.to_state is HealthState.DEGRADED
    assert "error_rate warn" in down.reason
    assert sm.evaluate(degraded, now=T0 + 500) == []
    assert sm.state is HealthState.DEGRADED


# ---- FAILED ----------------------------------------------------------------------------------------------------


def test_critical_that_persists_past_the_limit_becomes_failed_and_opens_the_breaker() -> None:
    sm = machine()
    unloaded = with_check(check_models_loaded(False))
    sm.evaluate(unloaded, now=T0)
    assert sm.evaluate(unloaded, now=T0 + 299) == []
    [failed] = sm.evaluate(unloaded, now=T0 + 300)
    assert failed.to_state is HealthState.FAILED
    assert "critical for 300 s" in failed.reason
    assert RecoveryAction.OPEN_BREAKER in failed.actions
    assert RecoveryAction.RELOAD_MODELS in failed.actions


def test_a_backlog_that_fails_keeps_the_worker_reading_with_its_breaker_closed() -> None:
    # Lag (or latency, or rate) critical for 5 min: the worker is what drains the backlog. Opening the breaker for
    # 30 s only deepened it.
    sm = machine()
    backlog = with_check(check_consumer_lag(261.0))
    sm.evaluate(backlog, now=T0)
    [failed] = sm.evaluate(backlog, now=T0 + 300)
    assert failed.to_state is HealthState.FAILED
    assert RecoveryAction.OPEN_BREAKER not in failed.actions
    with_models_gone = [*backlog, check_models_loaded(False)]
    sm = machine()
    sm.evaluate(with_models_gone, now=T0)
    [failed] = sm.evaluate(with_models_gone, now=T0 + 300)
    assert RecoveryAction.OPEN_BREAKER in failed.actions, "unsafe to trade: stop taking events"


def test_long_critical_state_does_not_fail_while_checks_look_better() -> None:
    sm = machine()
    sm.evaluate(with_check(check_breaker(BreakerState.OPEN)), now=T0)
    half_open = with_check(check_breaker(BreakerState.HALF_OPEN))
    assert sm.evaluate(half_open, now=T0 + 310) == []
    assert sm.state is HealthState.CRITICAL


def test_a_flapping_breaker_keeps_the_state_critical_until_failed() -> None:
    sm = machine()
    opened = with_check(check_breaker(BreakerState.OPEN))
    half_open = with_check(check_breaker(BreakerState.HALF_OPEN))
    for cycle in range(10):  # open 30 s, half-open 1 s, reopens: never better for recovery_s
        start = T0 + cycle * 31
        sm.evaluate(opened, now=start)
        sm.evaluate(half_open, now=start + 30)
    assert sm.state is HealthState.CRITICAL
    [failed] = sm.evaluate(opened, now=T0 + 310)
    assert failed.to_state is HealthState.FAILED


def test_failed_stays_failed_while_checks_are_still_critical() -> None:
    sm = machine(HealthState.FAILED)
    for second in range(0, 1000, 10):
        assert sm.evaluate(with_check(check_redis(None)), now=T0 + second) == []
    assert sm.state is HealthState.FAILED


def test_failed_recovers_one_step_per_recovery_period() -> None:
    sm = machine(HealthState.FAILED)
    seen = []
    for second in range(0, 100):
        seen += [t.to_state for t in sm.evaluate(all_ok(), now=T0 + second)]
    assert seen == [HealthState.CRITICAL, HealthState.DEGRADED, HealthState.HEALTHY]


# ---- recovery actions and records ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("failing", "expected"),
    [
        (check_redis(None), (RecoveryAction.RECONNECT_REDIS,)),
        (check_models_loaded(False), (RecoveryAction.RELOAD_MODELS,)),
        (check_model_staleness(3600.0), (RecoveryAction.RELOAD_MODELS,)),
        (check_latency(10.0, 250.0), ()),
        (check_redis(20.0), ()),  # slow but reachable: a warning, nothing to reconnect
        (check_confidence(0.1), ()),
    ],
)
def test_recovery_actions_follow_the_failing_checks(failing: HealthCheck, expected: tuple) -> None:
    [transition] = machine().evaluate(with_check(failing), now=T0)
    assert transition.actions == expected


def test_recent_transitions_are_bounded_but_all_are_counted() -> None:
    sm = HealthStateMachine(HealthPolicy(recovery_s=1.0, history=3), clock=lambda: T0)
    now = T0
    for _ in range(4):
        sm.evaluate(with_check(check_confidence(0.1)), now=now)
        sm.evaluate(all_ok(), now=now + 1)
        sm.evaluate(all_ok(), now=now + 2)
        now += 10
    assert sm.transitions_total == 8
    assert len(sm.recent_transitions) == 3
    assert sm.recent_transitions[-1].to_state is HealthState.HEALTHY


def test_snapshot_shows_state_checks_and_transitions() -> None:
    sm = machine()
    sm.evaluate(with_check(check_confidence(0.5)), now=T0 + 5)
    snapshot = sm.snapshot()
    assert snapshot["state"] == 1
    assert snapshot["state_name"] == "degraded"
    assert snapshot["since"] == T0 + 5
    assert {c["name"] for c in snapshot["health_checks"]} >= {"redis", "model_confidence"}
    assert snapshot["recent_transitions"] == [
        {
            "at": T0 + 5,
            "from": "healthy",
            "to": "degraded",
            "reason": sm.recent_transitions[0].reason,
            "actions": [],
        }
    ]
    assert "model_confidence warn" in snapshot["recent_transitions"][0]["reason"]


def test_alert_severity_follows_the_move() -> None:
    sm = machine()
    [to_degraded] = sm.evaluate(with_check(check_confidence(0.1)), now=T0)
    [to_critical] = sm.evaluate(with_check(check_redis(None)), now=T0 + 1)
    assert sm.evaluate(all_ok(), now=T0 + 2) == []
    [recovering] = sm.evaluate(all_ok(), now=T0 + 40)
    assert [t.alert_severity for t in (to_degraded, to_critical, recovering)] == [
        Severity.P1,
        Severity.P0,
        Severity.P2,
    ]


@pytest.mark.parametrize(("errors", "says", "not_says"), [
    # A Redis outage on a quiet stream: every attempt a failed read, no event handled. Bad data is not the cause.
    ({"read": 12}, ["read 12", "Redis failed or refused", "triage worker-down"], ["dead-letter", "data quality"]),
    ({"validate": 9, "commit": 1}, ["validate 9, commit 1", "bad input", "Redis failed"], ["agents failed"]),
    ({"inference": 4}, ["inference 4", "the agents failed", "models verify"], ["Redis", "bad input"]),
    (None, ["look for error patterns in the logs and in the dead-letter stream"], ["Redis"]),
])
def test_a_high_error_rate_names_what_failed_and_where_to_look(
    errors: dict[str, int] | None, says: list[str], not_says: list[str]
) -> None:
    check = check_error_rate(1.0, errors=errors)
    assert check.status is CheckStatus.WARN
    assert check.message.startswith("error rate 100.0% > 5%")
    for text in says:
        assert text in check.message
    for text in not_says:
        assert text not in check.message
