"""The worker's health monitor: a thread that measures, judges and reports, once a tick.

Each tick it measures the Redis round trip and consumer lag on its own connection, reads the rolling window,
runs every health check, moves the state machine, alerts on every transition (health and breaker) to
`tactical_alerts`, runs recovery actions, honours breaker reset requests, watches for a newly promoted
model bundle, and prepares the documents `/health` and `/health/state` serve. The main loop never waits on it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from models.bundle import BundleError, check_unchanged, serving_bundle_dir, verify_bundle
from worker.alerts import Severity, publish_alert
from worker.breaker import BreakerState, BreakerTransition, restart_count, take_reset_request
from worker.connection import REDIS_FAILED, REDIS_UNREACHABLE, connect
from worker.health import CheckStatus as Status
from worker.health import (
    HealthCheck,
    HealthPolicy,
    HealthState,
    HealthStateMachine,
    RecoveryAction,
    check_breaker,
    check_confidence,
    check_consumer_lag,
    check_error_rate,
    check_event_rate,
    check_latency,
    check_model_staleness,
    check_models_loaded,
    check_redis,
    recovery_actions,
)
from worker.lag import ConsumerLag, LagSample, LagTrend, LagUnavailable, read_consumer_lag
from worker.records import MATRIX_SHAPE
from worker.version import release

if TYPE_CHECKING:
    from worker.service import Worker

log = logging.getLogger("tactical.monitor")

AGENT_PROBE_INTERVAL_S = 10.0
LAG_UNREADABLE: tuple[type[Exception], ...] = (LagUnavailable, *REDIS_FAILED)  # named: mypy reads no `*` in except
RATE_WARMUP_S = 10.0  # a rate needs some seconds of work behind it before it can be judged
# The monitor's commands are quick (PING, lag, an alert's XADD). A reply this late is 20 times the critical round
# trip, and is judged "unreachable", not waited for: with redis-py's default timeout and retries a hung Redis kept
# /health "healthy" for ~11 s, then refreshed it every ~6 s.
REPLY_TIMEOUT_S = 1.0


def _ms(seconds: float) -> float | None:
    return None if seconds != seconds else seconds * 1e3  # NaN: nothing measured yet


class HealthMonitor:
    def __init__(self, worker: Worker, *, interval_s: float = 1.0, clock: Callable[[], float] = time.time) -> None:
        self.worker = worker
        self.settings = worker.settings
        self.interval_s = interval_s
        self.clock = clock
        self.machine = HealthStateMachine(HealthPolicy(recovery_s=self.settings.health_recovery_s), clock=clock)
        self.lag_trend = LagTrend()
        self._last_lag: ConsumerLag | None = None  # spares the lag script re-reading what it knew last tick
        self.client = connect(self.settings.redis_url, client_name=f"tactical-monitor:{self.settings.consumer}",
                              connect_timeout_s=REPLY_TIMEOUT_S, reply_timeout_s=REPLY_TIMEOUT_S, retries=0)
        self.model_confirmed_at = clock()
        self.model_problem: str | None = None
        self._breaker_transitions_seen = 0  # published as alerts
        self._breaker_transitions_logged = 0
        self._next_model_poll = 0.0
        self._refused: tuple[tuple[Path, tuple[str, ...]], str] | None = None  # (bundle, its files), and why
        self._next_agent_probe = 0.0
        self._unsent_alerts: deque[dict[str, Any]] = deque(maxlen=1000)  # alerts raised while Redis was down
        self._breaker_opened_while_failed = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="health-monitor", daemon=True)
        self.state_doc: dict[str, Any] = {}
        self.health_doc: dict[str, Any] = {"status": "warn", "state": "starting", "state_code": 1}

    # ---- thread ----------------------------------------------------------------------------------------------
    def start(self) -> HealthMonitor:
        self.tick()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        self.client.close()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.tick()
            except Exception:  # the monitor must outlive any one bad tick
                log.exception("health monitor tick failed")

    # ---- one tick --------------------------------------------------------------------------------------------
    def tick(self) -> None:
        now = self.clock()
        rtt_ms = self._redis_rtt_ms()
        lag = self._lag(now) if rtt_ms is not None else None
        self._log_breaker_transitions()
        if rtt_ms is not None:
            self._honour_reset_request()
            self._refresh_restart_count()
            self._flush_alerts()
        self._watch_models(now)
        self._probe_agents(now)
        stats = self.worker.telemetry.publish()
        checks = self.checks(rtt_ms, lag, stats, now)
        transitions = self.machine.evaluate(checks, now)
        for transition in transitions:
            self._on_transition(transition)
        self._open_breaker_if_failed_unsafely(checks)
        self._publish(lag, stats, now)

    def _open_breaker_if_failed_unsafely(self, checks: list[HealthCheck]) -> None:
        """FAILED on the backlog alone leaves the breaker closed; a check that goes critical later (the models gone,
        say) makes it unsafe to trade, and adds no transition to open it on: opened here, once per FAILED."""
        if self.machine.state is not HealthState.FAILED:
            self._breaker_opened_while_failed = False
            return
        if not self._breaker_opened_while_failed and \
                RecoveryAction.OPEN_BREAKER in recovery_actions(checks, HealthState.FAILED):
            critical = ", ".join(check.name for check in checks if check.status is Status.CRITICAL)
            self.run_recovery(RecoveryAction.OPEN_BREAKER, f"failed, and critical: {critical}")

    def checks(self, rtt_ms: float | None, lag: ConsumerLag | None, stats: Any, now: float) -> list[HealthCheck]:
        breaker = self.worker.breaker
        # A count that is only a bound still says a backlog is there: its low end (Redis's figure can overstate).
        backlog = None if lag is None else lag.backlog_at_least
        warmed_up = time.monotonic() - self.worker.state.started_at >= RATE_WARMUP_S
        checks = [
            check_redis(rtt_ms),
            check_consumer_lag(None if lag is None else lag.seconds),
            check_latency(_ms(stats.latency_p50_s), _ms(stats.latency_p99_s)),
            check_error_rate(None if stats.error_rate != stats.error_rate else stats.error_rate,
                             errors=stats.errors),
            check_model_staleness(now - self.model_confirmed_at),
            check_models_loaded(self.worker.ensemble is not None),
            check_breaker(breaker.state),
            check_confidence(None if stats.mean_confidence != stats.mean_confidence else stats.mean_confidence),
            check_event_rate(stats.throughput_per_s if warmed_up else None, backlog,
                             backlog_is_floor=lag is not None and not lag.count_exact),
        ]
        if self.model_problem:
            checks.append(HealthCheck("model_reload", Status.WARN, None, None, self.model_problem))
        return checks

    def _redis_rtt_ms(self) -> float | None:
        try:
            started = time.perf_counter()
            self.client.ping()
            return (time.perf_counter() - started) * 1e3
        except REDIS_UNREACHABLE:
            return None

    def _lag(self, now: float) -> ConsumerLag | None:
        streams = self.worker.streams
        try:
            lag = read_consumer_lag(self.client, streams.input, streams.group, previous=self._last_lag)
        except LAG_UNREADABLE:  # unreachable, or refused (an ACL without XINFO, say)
            return None
        self._last_lag = lag
        self.lag_trend.add(LagSample.from_consumer_lag(lag, now))
        return lag

    def _honour_reset_request(self) -> None:
        try:
            actor = take_reset_request(self.client, self.settings.consumer)
        except REDIS_FAILED:  # tried again next tick; /health keeps moving
            return
        if actor:
            with self.worker.breaker_lock:
                self.worker.breaker.reset(actor)
            self.worker.restart_count = 0  # the reset cleared the restart counter too: /health/state must say so
            log.warning("circuit breaker reset by %s", actor)

    def _refresh_restart_count(self) -> None:
        """The starts within the restart window as Redis counts them now: the count taken at this worker's start
        said 6/5 long after the window had moved past those starts."""
        try:
            self.worker.restart_count = restart_count(self.client, self.settings.breaker_restart_window_s, time.time())
        except REDIS_FAILED:  # tried again next tick
            return

    def _log_breaker_transitions(self) -> None:
        """Log each breaker transition on the tick it happened, Redis or not (its alert may wait for Redis)."""
        with self.worker.breaker_lock:
            _, recent = self.worker.breaker.transitions_since(self._breaker_transitions_logged)
            self._breaker_transitions_logged = self.worker.breaker.transitions_total
        for transition in recent:
            opened = transition.to_state is BreakerState.OPEN
            log.log(logging.ERROR if opened else logging.INFO, "circuit breaker %s: %s",
                    transition.to_state.name.lower(), transition.reason)

    def _on_transition(self, transition: Any) -> None:
        self.worker.telemetry.metrics.record_transition(int(transition.from_state), int(transition.to_state))
        log.warning("health %s → %s: %s", transition.from_state.name.lower(), transition.to_state.name.lower(),
                    transition.reason)
        self._unsent_alerts.append({
            "severity": transition.alert_severity, "kind": "health_transition",
            "message": f"health {transition.from_state.name.lower()} → {transition.to_state.name.lower()}: "
            f"{transition.reason}",
            "source": self.settings.consumer,
            "from_state": transition.from_state.name.lower(), "to_state": transition.to_state.name.lower(),
            "at": transition.at,  # its `ts`, however late Redis takes it
        })
        self._flush_alerts()
        for action in transition.actions:
            self.run_recovery(action, transition.reason)

    def _flush_alerts(self) -> None:
        """Publish the health alerts queued and the breaker transitions not yet published, oldest first across both:
        those raised while Redis was down go out once it is back, in the order they happened (the health state that
        went critical before the outage opened the breaker comes first), each with the time it happened."""
        breaker = self.worker.breaker
        with self.worker.breaker_lock:
            lost, recent = breaker.transitions_since(self._breaker_transitions_seen)
        if lost:  # the breaker flapped more often than it keeps history while alerts could not be sent
            self._breaker_transitions_seen += lost
            log.warning("%d circuit breaker transitions were never published as alerts (only the last %d are kept)",
                        lost, breaker.config.history)
        transitions = deque(recent)
        while transitions or self._unsent_alerts:
            from_breaker = bool(transitions) and (not self._unsent_alerts
                                                  or transitions[0].at <= self._unsent_alerts[0]["at"])
            alert = self._breaker_alert(transitions[0]) if from_breaker else self._unsent_alerts[0]
            try:
                publish_alert(self.client, **alert)
            except REDIS_FAILED:
                return  # published on a later tick, with the time it happened
            if from_breaker:
                transitions.popleft()
                self._breaker_transitions_seen += 1
            else:
                self._unsent_alerts.popleft()

    def _breaker_alert(self, transition: BreakerTransition) -> dict[str, Any]:
        opened = transition.to_state is BreakerState.OPEN
        return {
            "severity": Severity.P0 if opened else Severity.P2,
            "kind": "breaker_open" if opened else f"breaker_{transition.to_state.name.lower()}",
            "message": f"circuit breaker {transition.from_state.name.lower()} → {transition.to_state.name.lower()}: "
            f"{transition.reason}",
            "source": self.settings.consumer,
            "at": transition.at,
        }

    def run_recovery(self, action: RecoveryAction, reason: str) -> None:
        log.warning("recovery action %s (%s)", action.value, reason)
        if action is RecoveryAction.OPEN_BREAKER:
            self._breaker_opened_while_failed = True
        if action is RecoveryAction.RECONNECT_REDIS:
            self.worker.request_reconnect()
            self.client.connection_pool.disconnect()
        elif action is RecoveryAction.RELOAD_MODELS:
            self._next_model_poll = 0.0
            self._watch_models(self.clock(), force_reload=True)
        elif action is RecoveryAction.OPEN_BREAKER:
            with self.worker.breaker_lock:
                self.worker.breaker.force_open(f"health recovery: {reason}")

    # ---- models ----------------------------------------------------------------------------------------------
    def _watch_models(self, now: float, *, force_reload: bool = False) -> None:
        """Confirm the loaded bundle is still the current, intact one; load a newly promoted one in this thread,
        then hand it to the main loop. A failed reload keeps the old models and degrades health."""
        if now < self._next_model_poll:
            return
        self._next_model_poll = now + self.settings.model_poll_s
        loaded = self.worker.ensemble
        try:
            # What a worker starting now would serve: CURRENT's, or the only bundle there. With CURRENT gone from a
            # directory of several, it keeps its bundle and says so (degraded); it never switches to the newest.
            bundle_dir = serving_bundle_dir(self.settings.models_dir)
            if force_reload or loaded is None or bundle_dir.resolve() != loaded.bundle_dir.resolve():
                self._reload(bundle_dir)
            else:
                check_unchanged(loaded.manifest, verify_bundle(bundle_dir))
        except Exception as exc:  # whatever a bad bundle raises must not stop the monitor's ticks
            kept = getattr(loaded, "version", "none")
            problem = f"model bundle not confirmed, keeping {kept}: {_problem_detail(exc)}"
            # Counted, but not in the error rate: no event failed (with no traffic, one failed poll read as 100 %
            # and paged TacticalErrorRateHigh at the input data); the model_reload check reports the bundle.
            self.worker.telemetry.metrics.record_error("model_load")
            if problem != self.model_problem:  # logged when it starts or changes, not on every poll
                log.error("%s", problem)
            self.model_problem = problem
            return
        if self.model_problem is not None:
            log.info("model bundle %s confirmed again", getattr(self.worker.ensemble, "version", "none"))
        self.model_problem = None
        self.model_confirmed_at = now

    def _reload(self, bundle_dir: Path) -> None:
        """Load `bundle_dir` — unless it is the very bundle already refused, files unchanged (its hashes are
        checked, cheap): loading TorchScript and warming it up again every poll would take the serving host's CPU
        for the same refusal."""
        key = (bundle_dir.resolve(), tuple(agent.sha256 for agent in verify_bundle(bundle_dir).agents))
        if self._refused is not None and self._refused[0] == key:
            raise BundleError(self._refused[1])  # a new one each time: a stored one would grow its traceback
        try:
            self.worker.reload_models(bundle_dir)
        except Exception as exc:
            self._refused = (key, _problem_detail(exc))
            raise
        self._refused = None

    def _probe_agents(self, now: float) -> None:
        """Time each agent alone on one event (the hot path runs them fused): `inference` per `agent_type`."""
        ensemble = self.worker.ensemble
        if ensemble is None or now < self._next_agent_probe:
            return
        self._next_agent_probe = now + AGENT_PROBE_INTERVAL_S
        matrix = np.zeros((1, *MATRIX_SHAPE), dtype=np.float32)
        for agent, seconds in ensemble.time_agents(matrix).items():
            self.worker.telemetry.metrics.observe_stage("inference", seconds, agent_type=agent)

    # ---- what HTTP serves ------------------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        """`/health`: the last tick's judgement, with the uptime of now (a tick waiting on Redis must not stop it)."""
        return {**self.health_doc, "uptime_s": self.uptime_s()}

    def state(self) -> dict[str, Any]:
        """`/health/state`: the last tick's document (`at` says when it was measured), with the uptime of now and the
        release and commit."""
        return {**self.state_doc, **release(), "uptime_s": self.uptime_s()} if self.state_doc else {}

    def uptime_s(self) -> float:
        return round(time.monotonic() - self.worker.state.started_at, 3)

    def _publish(self, lag: ConsumerLag | None, stats: Any, now: float) -> None:
        worker = self.worker
        metrics = worker.telemetry.metrics
        state = self.machine.state
        breaker = worker.breaker
        ensemble = worker.ensemble
        staleness = now - self.model_confirmed_at
        metrics.set_health_state(int(state))
        metrics.set_breaker_state(int(breaker.state))
        metrics.set_consumer_lag(None if lag is None else lag.seconds, None if lag is None else lag.count)
        metrics.set_model_staleness(staleness)
        uptime = self.uptime_s()
        snapshot = self.machine.snapshot()
        self.state_doc = {
            "at": now,  # when this document was measured
            "state": state.name.lower(),
            "state_code": int(state),
            "since": snapshot["since"],
            "consumer": self.settings.consumer,
            "uptime_s": uptime,
            "health_checks": snapshot["health_checks"],
            "recovery": snapshot["recovery"],
            "recent_transitions": snapshot["recent_transitions"],
            "circuit_breaker": {
                "state": breaker.state.name.lower(),
                "state_code": int(breaker.state),
                "consecutive_failures": breaker.consecutive_failures,
                "restart_count": worker.restart_count,
                "restart_limit": self.settings.breaker_restart_limit,
                "restart_window_s": self.settings.breaker_restart_window_s,
                "opened_at": breaker.opened_at,
                "last_reason": breaker.last_reason,
                "recent_transitions": [t.as_dict() for t in breaker.recent_transitions[-10:]],
            },
            "model": {
                "version": None if ensemble is None else ensemble.version,
                "created_at": None if ensemble is None else ensemble.created_at.isoformat(),
                "staleness_s": round(staleness, 3),
                "bundle_dir": None if ensemble is None else str(ensemble.bundle_dir),
                "problem": self.model_problem,
            },
            "lag": {**(lag.as_dict() if lag else {"count": None, "seconds": None}),
                    "trend": self.lag_trend.status(now).value},
            # The window's failures by operation (as tactical_errors_total counts them): what its error rate is made
            # of. A key of its own: "window" holds numbers only, and the CLI of a release before this checks that.
            "window_errors": dict(stats.errors),
            "window": {
                "window_s": stats.window_s,
                "events": stats.events,
                "throughput_per_s": stats.throughput_per_s,
                "p50_ms": _ms(stats.latency_p50_s),
                "p99_ms": _ms(stats.latency_p99_s),
                "error_rate": stats.error_rate,
                "execution_rate": stats.execution_rate,
                "mean_confidence": stats.mean_confidence,
            },
            **worker.telemetry.books(),
        }
        self.health_doc = {
            "status": ("pass", "warn", "fail", "fail")[int(state)],
            "state": state.name.lower(),
            "state_code": int(state),
            "consumer": self.settings.consumer,
            "model_version": None if ensemble is None else ensemble.version,
            "uptime_s": uptime,
        }


def _problem_detail(exc: Exception) -> str:
    """What a model poll that failed says: a bundle's or the file system's own message, else the exception's type."""
    return str(exc) if isinstance(exc, BundleError | OSError) else f"{type(exc).__name__}: {exc}"
