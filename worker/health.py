"""Health: pure checks against the runbook's thresholds, and the state machine they drive.

Each check turns one measurement into ok / warn / critical with its value and threshold. The state is the worst
check (ok → HEALTHY, warn → DEGRADED, critical → CRITICAL), with hysteresis: a worse state is entered at once; a
better one only after the checks have held better for `recovery_s`, and one step at a time. FAILED means the
worker stayed CRITICAL for `failed_after_s` (default 5 minutes, the runbook's escalation point) and the checks
are still critical: Redis never came back, models could not be loaded, or the breaker kept opening.

Moves (anything else raises `IllegalHealthTransition`):

    HEALTHY  → DEGRADED, CRITICAL        (escalation, immediate)
    DEGRADED → CRITICAL                  (escalation, immediate)
    CRITICAL → FAILED                    (critical for failed_after_s)
    FAILED   → CRITICAL → DEGRADED → HEALTHY   (recovery, each after recovery_s of better checks)

Every move is recorded as a `Transition` with its reason and the recovery actions the worker should run.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import IntEnum, StrEnum
from typing import Any

from worker.alerts import Severity
from worker.breaker import BreakerState

Clock = Callable[[], float]


class HealthState(IntEnum):
    HEALTHY = 0
    DEGRADED = 1
    CRITICAL = 2
    FAILED = 3


class CheckStatus(StrEnum):
    OK = "ok"
    WARN = "warn"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return _STATUS_RANK[self]


_STATUS_RANK = {CheckStatus.OK: 0, CheckStatus.WARN: 1, CheckStatus.CRITICAL: 2}
_STATE_FOR_STATUS = {
    CheckStatus.OK: HealthState.HEALTHY,
    CheckStatus.WARN: HealthState.DEGRADED,
    CheckStatus.CRITICAL: HealthState.CRITICAL,
}


class CheckName(StrEnum):
    REDIS = "redis"
    CONSUMER_LAG = "consumer_lag"
    LATENCY = "latency"
    ERROR_RATE = "error_rate"
    MODEL_STALENESS = "model_staleness"
    MODELS_LOADED = "models_loaded"
    CIRCUIT_BREAKER = "circuit_breaker"
    MODEL_CONFIDENCE = "model_confidence"
    EVENT_RATE = "event_rate"


class RecoveryAction(StrEnum):
    RECONNECT_REDIS = "reconnect_redis"
    RELOAD_MODELS = "reload_models"
    OPEN_BREAKER = "open_breaker"


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Every health threshold, in one place. A value is in alarm only when strictly past its threshold (the
    runbook's "P99 > 100ms", "confidence < 0.6"): exactly at the threshold is still fine.

    Redis round trip (ours; the runbook names none): one decision makes several round trips inside a 100 ms P99
    budget, so a single PING over 10 ms is a warning and over 50 ms — half the budget — is critical.

    Slow commands (triage's SLOWLOG reading; ours too): one that held Redis over 50 ms, half the P99 budget, is a
    cause worth naming. A full batch's commit script takes ~13 ms on a slow 2-core machine: that is batching at
    work, not a fault, so the round-trip warning (10 ms) would be a false alarm on every busy worker.

    Event rate: "below 50/s" only means something when there is work waiting. An idle stream processes 0/s and
    that is fine; so the rate is judged only while at least `event_rate_min_backlog` entries wait (one second of
    work at the alert rate), and then a rate under 50/s is a warning. A backlog that ages is the lag check's job.
    """

    redis_rtt_warn_ms: float = 10.0
    redis_rtt_critical_ms: float = 50.0
    slow_command_warn_ms: float = 50.0
    lag_warn_s: float = 2.0
    lag_critical_s: float = 5.0
    p50_warn_ms: float = 50.0
    p99_critical_ms: float = 100.0
    error_rate_warn: float = 0.05
    model_staleness_critical_s: float = 15 * 60.0
    confidence_warn: float = 0.6
    event_rate_alert_per_s: float = 50.0
    event_rate_min_backlog: int = 50

    def __post_init__(self) -> None:
        if self.redis_rtt_warn_ms > self.redis_rtt_critical_ms:
            raise ValueError("redis_rtt_warn_ms must not exceed redis_rtt_critical_ms")
        if self.lag_warn_s > self.lag_critical_s:
            raise ValueError("lag_warn_s must not exceed lag_critical_s")


DEFAULT_THRESHOLDS = Thresholds()


@dataclass(frozen=True, slots=True)
class HealthCheck:
    name: str
    status: CheckStatus
    value: float | None
    threshold: float | None
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status.value,
            "value": self.value,
            "threshold": self.threshold,
            "message": self.message,
        }


# ---- checks: one pure function each ----------------------------------------------------------------------------


def check_redis(rtt_ms: float | None, thresholds: Thresholds = DEFAULT_THRESHOLDS) -> HealthCheck:
    """`rtt_ms` is one PING round trip; None means Redis did not answer."""
    name = CheckName.REDIS
    if rtt_ms is None:
        return HealthCheck(
            name, CheckStatus.CRITICAL, None, None, "Redis unreachable: check the server, the URL and the network"
        )
    if rtt_ms > thresholds.redis_rtt_critical_ms:
        return HealthCheck(
            name,
            CheckStatus.CRITICAL,
            rtt_ms,
            thresholds.redis_rtt_critical_ms,
            f"Redis round trip {rtt_ms:.1f} ms > {thresholds.redis_rtt_critical_ms:g} ms: "
            "check Redis load (SLOWLOG GET 10) and the network",
        )
    if rtt_ms > thresholds.redis_rtt_warn_ms:
        return HealthCheck(
            name,
            CheckStatus.WARN,
            rtt_ms,
            thresholds.redis_rtt_warn_ms,
            f"Redis round trip {rtt_ms:.1f} ms > {thresholds.redis_rtt_warn_ms:g} ms",
        )
    return HealthCheck(name, CheckStatus.OK, rtt_ms, thresholds.redis_rtt_warn_ms, f"Redis round trip {rtt_ms:.1f} ms")


def check_consumer_lag(seconds: float | None, thresholds: Thresholds = DEFAULT_THRESHOLDS) -> HealthCheck:
    """`seconds` is the age of the oldest undelivered or pending entry (0 when nothing waits); None: not measured."""
    name = CheckName.CONSUMER_LAG
    if seconds is None:
        return HealthCheck(
            name, CheckStatus.WARN, None, thresholds.lag_warn_s, "consumer lag unknown: stream or group unreadable"
        )
    if seconds > thresholds.lag_critical_s:
        return HealthCheck(
            name,
            CheckStatus.CRITICAL,
            seconds,
            thresholds.lag_critical_s,
            f"consumer lag {seconds:.1f} s > {thresholds.lag_critical_s:g} s: check XINFO GROUPS, the processing "
            "rate, and restart or scale consumers if it keeps rising",
        )
    if seconds > thresholds.lag_warn_s:
        return HealthCheck(
            name,
            CheckStatus.WARN,
            seconds,
            thresholds.lag_warn_s,
            f"consumer lag {seconds:.1f} s > {thresholds.lag_warn_s:g} s",
        )
    return HealthCheck(name, CheckStatus.OK, seconds, thresholds.lag_warn_s, f"consumer lag {seconds:.1f} s")


def check_latency(
    p50_ms: float | None, p99_ms: float | None, thresholds: Thresholds = DEFAULT_THRESHOLDS
) -> HealthCheck:
    """End-to-end decision latency percentiles; None when no event has been processed in the window."""
    name = CheckName.LATENCY
    if p50_ms is None or p99_ms is None:
        return HealthCheck(name, CheckStatus.OK, None, thresholds.p99_critical_ms, "no events processed recently")
    observed = f"p50 {p50_ms:.1f} ms, p99 {p99_ms:.1f} ms"
    if p99_ms > thresholds.p99_critical_ms:
        return HealthCheck(
            name,
            CheckStatus.CRITICAL,
            p99_ms,
            thresholds.p99_critical_ms,
            f"{observed}: p99 > {thresholds.p99_critical_ms:g} ms: check CPU (docker stats) and Redis latency; "
            "restart the service if it persists",
        )
    if p50_ms > thresholds.p50_warn_ms:
        return HealthCheck(
            name,
            CheckStatus.WARN,
            p50_ms,
            thresholds.p50_warn_ms,
            f"{observed}: p50 > {thresholds.p50_warn_ms:g} ms: check resource usage and recent changes",
        )
    return HealthCheck(name, CheckStatus.OK, p99_ms, thresholds.p99_critical_ms, observed)


# Where to look, by what failed (the window's errors by operation, as tactical_errors_total counts them).
_REDIS_OPERATIONS = frozenset({"read", "claim", "commit", "reclaim", "heartbeat"})
_MODEL_OPERATIONS = frozenset({"inference", "aggregate", "batch", "model_load"})


def _error_advice(errors: Mapping[str, int]) -> str:
    failed = {operation for operation, count in errors.items() if count}
    advice = []
    if failed & _REDIS_OPERATIONS:
        advice.append("Redis failed or refused (the worker log says why; `tacticalctl triage worker-down`)")
    if failed & _MODEL_OPERATIONS:
        advice.append("the agents failed (`tacticalctl models verify`, the worker log)")
    if "validate" in failed:
        advice.append("events were dead-lettered: bad input (`tacticalctl dead-letter list`, data quality)")
    if failed - _REDIS_OPERATIONS - _MODEL_OPERATIONS - {"validate"} or not advice:
        advice.append("look for error patterns in the logs and in the dead-letter stream")
    return "; ".join(advice)


def check_error_rate(
    rate: float | None, thresholds: Thresholds = DEFAULT_THRESHOLDS, errors: Mapping[str, int] | None = None
) -> HealthCheck:
    """`rate` is the fraction (0–1) of recent attempts that failed; None when there were none. `errors`, the window's
    failures by operation when known, names what failed and where to look: a Redis outage on a quiet stream is all
    failed reads, not bad data."""
    name = CheckName.ERROR_RATE
    if rate is None:
        return HealthCheck(name, CheckStatus.OK, None, thresholds.error_rate_warn, "no events processed recently")
    if rate > thresholds.error_rate_warn:
        counted = {operation: count for operation, count in (errors or {}).items() if count}
        what = ("" if not counted else " — " + ", ".join(
            f"{operation} {count}" for operation, count in sorted(counted.items(), key=lambda item: -item[1])))
        return HealthCheck(
            name,
            CheckStatus.WARN,
            rate,
            thresholds.error_rate_warn,
            f"error rate {rate:.1%} > {thresholds.error_rate_warn:.0%}{what}: {_error_advice(counted)}",
        )
    return HealthCheck(name, CheckStatus.OK, rate, thresholds.error_rate_warn, f"error rate {rate:.1%}")


def check_model_staleness(seconds: float | None, thresholds: Thresholds = DEFAULT_THRESHOLDS) -> HealthCheck:
    """`seconds` since the worker last confirmed its loaded bundle is the current, intact one (re-checked every
    few seconds: CURRENT and every file's SHA-256); None when no bundle is loaded (see `check_models_loaded`)."""
    name = CheckName.MODEL_STALENESS
    limit = thresholds.model_staleness_critical_s
    if seconds is None:
        return HealthCheck(name, CheckStatus.WARN, None, limit, "model staleness unknown: no bundle loaded")
    if seconds > limit:
        return HealthCheck(
            name,
            CheckStatus.CRITICAL,
            seconds,
            limit,
            f"models not confirmed for {seconds / 60:.1f} min > {limit / 60:g} min: the current bundle is missing, "
            "tampered or failing to reload; check the model update pipeline (tacticalctl models verify)",
        )
    return HealthCheck(name, CheckStatus.OK, seconds, limit, f"models confirmed {seconds:.0f} s ago")


def check_models_loaded(loaded: bool) -> HealthCheck:
    name = CheckName.MODELS_LOADED
    if not loaded:
        return HealthCheck(
            name,
            CheckStatus.CRITICAL,
            0.0,
            1.0,
            "models not loaded: check the JIT compilation log and the bundle's manifest hashes",
        )
    return HealthCheck(name, CheckStatus.OK, 1.0, 1.0, "models loaded")


def check_breaker(state: BreakerState) -> HealthCheck:
    name = CheckName.CIRCUIT_BREAKER
    if state is BreakerState.OPEN:
        return HealthCheck(
            name,
            CheckStatus.CRITICAL,
            float(state),
            float(BreakerState.OPEN),
            "circuit breaker open: events wait in the stream; fix the cause, then `tacticalctl breaker reset`",
        )
    if state is BreakerState.HALF_OPEN:
        return HealthCheck(
            name, CheckStatus.WARN, float(state), float(BreakerState.OPEN), "circuit breaker half-open: trying one"
        )
    return HealthCheck(name, CheckStatus.OK, float(state), float(BreakerState.OPEN), "circuit breaker closed")


def check_confidence(mean: float | None, thresholds: Thresholds = DEFAULT_THRESHOLDS) -> HealthCheck:
    """Mean model confidence over recent decisions; None when there were none."""
    name = CheckName.MODEL_CONFIDENCE
    if mean is None:
        return HealthCheck(name, CheckStatus.OK, None, thresholds.confidence_warn, "no decisions recently")
    if mean < thresholds.confidence_warn:
        return HealthCheck(
            name,
            CheckStatus.WARN,
            mean,
            thresholds.confidence_warn,
            f"mean model confidence {mean:.3f} < {thresholds.confidence_warn:g}: review market conditions and "
            "the data feed; consider a model refresh",
        )
    return HealthCheck(name, CheckStatus.OK, mean, thresholds.confidence_warn, f"mean model confidence {mean:.3f}")


def check_event_rate(
    rate_per_s: float | None, backlog: int | None, thresholds: Thresholds = DEFAULT_THRESHOLDS, *,
    backlog_is_floor: bool = False,
) -> HealthCheck:
    """Processing rate, judged only while `backlog` (undelivered + pending entries) is large enough to matter.
    `backlog_is_floor`: the undelivered count is only a bound and `backlog` its low end (as many wait at least)."""
    name = CheckName.EVENT_RATE
    limit = thresholds.event_rate_alert_per_s
    if backlog is None or backlog < thresholds.event_rate_min_backlog or rate_per_s is None:
        return HealthCheck(name, CheckStatus.OK, rate_per_s, limit, "rate not judged: no backlog to work through")
    if rate_per_s < limit:
        return HealthCheck(
            name,
            CheckStatus.WARN,
            rate_per_s,
            limit,
            f"processing {rate_per_s:.1f} events/s < {limit:g}/s with {'at least ' if backlog_is_floor else ''}"
            f"{backlog} entries waiting: check for bottlenecks, consider more consumers",
        )
    return HealthCheck(name, CheckStatus.OK, rate_per_s, limit, f"processing {rate_per_s:.1f} events/s")


# ---- the state machine -----------------------------------------------------------------------------------------

HEALTH_TRANSITIONS: Mapping[HealthState, frozenset[HealthState]] = {
    HealthState.HEALTHY: frozenset({HealthState.DEGRADED, HealthState.CRITICAL}),
    HealthState.DEGRADED: frozenset({HealthState.HEALTHY, HealthState.CRITICAL}),
    HealthState.CRITICAL: frozenset({HealthState.DEGRADED, HealthState.FAILED}),
    HealthState.FAILED: frozenset({HealthState.CRITICAL}),
}


class IllegalHealthTransition(RuntimeError):
    """A move the transition table does not allow: a bug in the caller, never an operational condition."""


@dataclass(frozen=True, slots=True)
class HealthPolicy:
    recovery_s: float = 30.0
    failed_after_s: float = 300.0
    history: int = 100


@dataclass(frozen=True, slots=True)
class Transition:
    at: float
    from_state: HealthState
    to_state: HealthState
    reason: str
    actions: tuple[RecoveryAction, ...] = ()

    @property
    def alert_severity(self) -> Severity:
        """How loud the `tactical_alerts` entry for this move is: P0 on entering CRITICAL or FAILED, P1 on entering
        DEGRADED, P2 for a recovery."""
        if self.to_state < self.from_state:
            return Severity.P2
        return Severity.P1 if self.to_state is HealthState.DEGRADED else Severity.P0

    def as_dict(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "from": self.from_state.name.lower(),
            "to": self.to_state.name.lower(),
            "reason": self.reason,
            "actions": [action.value for action in self.actions],
        }


def worst_status(checks: Iterable[HealthCheck]) -> CheckStatus:
    return max((check.status for check in checks), key=lambda status: status.rank, default=CheckStatus.OK)


def state_for(checks: Iterable[HealthCheck]) -> HealthState:
    """The state the checks call for, before hysteresis (never FAILED: that takes time)."""
    return _STATE_FOR_STATUS[worst_status(checks)]


def recovery_actions(checks: Iterable[HealthCheck], to_state: HealthState) -> tuple[RecoveryAction, ...]:
    """What the worker should do on entering `to_state` with these checks failing."""
    critical = {check.name for check in checks if check.status is CheckStatus.CRITICAL}
    actions: list[RecoveryAction] = []
    if CheckName.REDIS in critical:
        actions.append(RecoveryAction.RECONNECT_REDIS)
    if critical & {CheckName.MODELS_LOADED, CheckName.MODEL_STALENESS}:
        actions.append(RecoveryAction.RELOAD_MODELS)
    if to_state is HealthState.FAILED and not critical <= _BACKLOG_CHECKS:
        # Stop taking events rather than trade on a worker that has not recovered: they wait in the stream. Not when
        # only the backlog failed (lag, latency, rate): the worker is what drains it, and 30 s of reading nothing
        # only made it deeper.
        actions.append(RecoveryAction.OPEN_BREAKER)
    return tuple(actions)


_BACKLOG_CHECKS = frozenset({CheckName.CONSUMER_LAG, CheckName.LATENCY, CheckName.EVENT_RATE})


def _describe_problems(checks: Iterable[HealthCheck]) -> str:
    problems = sorted(
        (check for check in checks if check.status is not CheckStatus.OK),
        key=lambda check: -check.status.rank,
    )
    return "; ".join(f"{check.name} {check.status.value}: {check.message}" for check in problems)


class HealthStateMachine:
    def __init__(
        self,
        policy: HealthPolicy | None = None,
        *,
        clock: Clock = time.time,
        initial: HealthState = HealthState.HEALTHY,
    ) -> None:
        self.policy = policy or HealthPolicy()
        self._clock = clock
        self._state = initial
        self._entered_at = clock()
        self._better_since: float | None = None
        self._checks: tuple[HealthCheck, ...] = ()
        self._transitions: deque[Transition] = deque(maxlen=self.policy.history)
        self._transitions_total = 0

    @property
    def state(self) -> HealthState:
        return self._state

    @property
    def entered_at(self) -> float:
        return self._entered_at

    @property
    def last_checks(self) -> tuple[HealthCheck, ...]:
        return self._checks

    @property
    def recent_transitions(self) -> list[Transition]:
        return list(self._transitions)

    @property
    def transitions_total(self) -> int:
        return self._transitions_total

    def evaluate(self, checks: Iterable[HealthCheck], now: float | None = None) -> list[Transition]:
        """Feed the latest checks; return the transitions they caused (the worker runs their `actions`)."""
        now = self._clock() if now is None else now
        self._checks = tuple(checks)
        wanted = state_for(self._checks)
        if self._state is HealthState.FAILED and wanted is HealthState.CRITICAL:
            wanted = HealthState.FAILED  # still failing: only checks better than critical start a recovery
        problems = _describe_problems(self._checks)

        if wanted > self._state:
            self._better_since = None
            return [self.move_to(wanted, problems, now)]

        if wanted < self._state:
            if self._better_since is None:
                self._better_since = now
            if now - self._better_since < self.policy.recovery_s:
                return []
            step_down = HealthState(self._state - 1)
            reason = f"checks at {wanted.name.lower()} for {now - self._better_since:.0f} s"
            if problems:
                reason += f"; still: {problems}"
            transition = self.move_to(step_down, reason, now)
            self._better_since = now if wanted < step_down else None
            return [transition]

        self._better_since = None
        critical_for = now - self._entered_at
        if self._state is HealthState.CRITICAL and critical_for >= self.policy.failed_after_s:
            reason = f"critical for {critical_for:.0f} s (limit {self.policy.failed_after_s:g} s): {problems}"
            return [self.move_to(HealthState.FAILED, reason, now)]
        return []

    def move_to(self, to_state: HealthState, reason: str, now: float | None = None) -> Transition:
        """Make one move from the table, record it and return it. `evaluate` is the usual caller; an operator's
        forced move goes through here too, so it is checked and recorded the same way."""
        now = self._clock() if now is None else now
        if to_state not in HEALTH_TRANSITIONS[self._state]:
            raise IllegalHealthTransition(
                f"health state cannot go from {self._state.name} to {to_state.name} ({reason})"
            )
        actions = recovery_actions(self._checks, to_state) if to_state > self._state else ()
        transition = Transition(now, self._state, to_state, reason, actions)
        self._transitions.append(transition)
        self._transitions_total += 1
        self._state = to_state
        self._entered_at = now
        return transition

    def recovery(self) -> dict[str, Any] | None:
        """While the checks call for a better state than the current one: since when, and when the next step down
        is due if they hold (None otherwise). An operator looking at a critical state with every check passing sees
        it is on its way back, not stuck."""
        if self._better_since is None or self._state is HealthState.HEALTHY:
            return None
        return {
            "to": HealthState(self._state - 1).name.lower(),
            "better_since": self._better_since,
            "next_step_at": self._better_since + self.policy.recovery_s,
        }

    def snapshot(self) -> dict[str, Any]:
        """What `/health/state` shows: the state, its checks, the recovery under way and the recent transitions."""
        return {
            "state": int(self._state),
            "state_name": self._state.name.lower(),
            "since": self._entered_at,
            "health_checks": [check.as_dict() for check in self._checks],
            "recovery": self.recovery(),
            "recent_transitions": [transition.as_dict() for transition in self._transitions],
        }
