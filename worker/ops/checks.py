"""The runbook's checklist steps, one function each, every one answering with a `CheckResult`.

A result says what was looked at (`step`), how it stands (ok / warn / critical / unknown), the value seen, the
threshold it was judged by, and the next action, as a `tacticalctl` command where one exists. Thresholds are the
runbook's, from `worker.health.DEFAULT_THRESHOLDS`; nothing here restates a number.

Redis or the worker being unreachable makes a step CRITICAL (it cannot be confirmed, and the cause is critical);
UNKNOWN is kept for a step that could not run for another reason (a malformed answer, an unreadable file).
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import math
import shutil
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, BinaryIO, ParamSpec

import redis

from models.bundle import (
    JIT_LOG_FILE,
    SIGNATURE_FILE,
    BundleError,
    Manifest,
    list_bundles,
    read_manifest,
    serving_bundle_dir,
    signed_current_version,
    verify_bundle,
)
from models.bundle_history import decided_versions
from worker.alerts import Alert, AuditTrailError, Severity, recent_alerts
from worker.backup import BACKUP_ACTION
from worker.breaker import BreakerState
from worker.connection import REDIS_UNREACHABLE, refusal_advice, selected_db
from worker.health import DEFAULT_THRESHOLDS, CheckStatus, HealthCheck, HealthState
from worker.health import check_breaker as health_check_breaker
from worker.health import check_confidence as health_check_confidence
from worker.health import check_consumer_lag as health_check_consumer_lag
from worker.health import check_error_rate as health_check_error_rate
from worker.health import check_latency as health_check_latency
from worker.heartbeat import live_consumers
from worker.lag import LagUnavailable, read_consumer_lag
from worker.names import DEFAULT_DB
from worker.ops.breaker_status import read_breaker_overview, reset_breaker
from worker.ops.duplicates import fleet_duplicate_events, scan_window
from worker.ops.fleet import read_fleet_metrics
from worker.ops.keys import clean_keys, find_stale_processing_keys, plan_key_cleanup, scan_idempotency_keys
from worker.ops.reports import build_daily_report, read_alert_history, read_performance, write_report
from worker.ops.sources import RedisUnavailable, Sources
from worker.ops.worker_client import WorkerNotAnswering, WorkerUnreachable, health_level
from worker.stream_entries import entry_time_ms

JIT_SUCCESS_MARK = "JIT compilation successful"
JIT_FAILURE_MARK = "JIT compilation FAILED"
MARKET_WINDOW_S = 15 * 60.0  # the runbook's "every 15 minutes"
THRESHOLDS = DEFAULT_THRESHOLDS
# No Redis to ask: not configured or not answering (a named tuple of types: mypy reads no `*` in an except).
REDIS_DOWN: tuple[type[Exception], ...] = (RedisUnavailable, *REDIS_UNREACHABLE)


class Status(StrEnum):
    OK = "ok"
    WARN = "warn"
    CRITICAL = "critical"
    UNKNOWN = "unknown"

    @classmethod
    def of(cls, status: CheckStatus) -> Status:
        return cls(status.value)


def worst(statuses: Sequence[Status]) -> Status:
    """CRITICAL beats WARN beats UNKNOWN beats OK (the monitoring-plugin order of the exit codes)."""
    for status in (Status.CRITICAL, Status.WARN, Status.UNKNOWN):
        if status in statuses:
            return status
    return Status.OK


@dataclass(frozen=True, slots=True)
class CheckResult:
    step: str
    status: Status
    value: str
    threshold: str
    next_action: str
    details: Mapping[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "status": self.status.value,
            "value": self.value,
            "threshold": self.threshold,
            "next_action": self.next_action,
            "details": dict(self.details),
        }


@dataclass(frozen=True, slots=True)
class Verdict:
    """What a check function decides; the `check` decorator adds the step name and turns failures into results."""

    status: Status
    value: str
    next_action: str = ""
    threshold: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)


P = ParamSpec("P")

WORKER_UNREACHABLE_ACTION = (
    "is the worker running? `docker compose ps tactical-marl`; check --worker-url / TACTICAL_WORKER_URL; "
    "`tacticalctl triage worker-down`"
)
WORKER_HUNG_ACTION = f"{WorkerNotAnswering.HUNG_ADVICE}; `tacticalctl triage worker-down`"
REDIS_UNREACHABLE_ACTION = (
    "start Redis or fix --redis-url / TACTICAL_REDIS_URL (database 2); `tacticalctl triage consumer-lag`"
)


def check(step: str, threshold: str = "") -> Callable[[Callable[P, Verdict]], Callable[P, CheckResult]]:
    def wrap(decide: Callable[P, Verdict]) -> Callable[P, CheckResult]:
        @functools.wraps(decide)
        def run(*args: P.args, **kwargs: P.kwargs) -> CheckResult:
            try:
                verdict = decide(*args, **kwargs)
            except RedisUnavailable as exc:
                verdict = Verdict(Status.CRITICAL, str(exc), REDIS_UNREACHABLE_ACTION)
            except WorkerNotAnswering as exc:  # a hung or stopped worker: starting one, or the URL, is not the fix
                verdict = Verdict(Status.CRITICAL, str(exc), WORKER_HUNG_ACTION)
            except WorkerUnreachable as exc:
                verdict = Verdict(Status.CRITICAL, str(exc), WORKER_UNREACHABLE_ACTION)
            except AuditTrailError as exc:  # the message says what to do; the step changed nothing
                verdict = Verdict(Status.CRITICAL, str(exc), "move the key aside as said, then run the step again")
            except REDIS_UNREACHABLE as exc:
                verdict = Verdict(Status.CRITICAL, f"Redis failed mid-check: {exc}", REDIS_UNREACHABLE_ACTION)
            except redis.ResponseError as exc:
                if (advice := refusal_advice(exc)) is not None:  # NOPERM, a missing database, a WRONGTYPE key…
                    verdict = Verdict(Status.CRITICAL, f"Redis refused a command: {exc}", advice)
                else:  # an error of the check's own (a command renamed away, say): it could not run
                    verdict = Verdict(Status.UNKNOWN, f"check could not run: Redis: {exc}",
                                      "run the step by hand (see runbook/RUNBOOK.md) and report the error")
            except (KeyError, TypeError, ValueError, OSError, BundleError) as exc:
                verdict = Verdict(Status.UNKNOWN, f"check could not run: {type(exc).__name__}: {exc}",
                                  "run the step by hand (see runbook/RUNBOOK.md) and report the error")
            return CheckResult(step, verdict.status, verdict.value,
                               threshold if verdict.threshold is None else verdict.threshold,
                               verdict.next_action, verdict.details)

        return run

    return wrap


def _from_health(check_result: HealthCheck, next_action: str, **details: Any) -> Verdict:
    status = Status.of(check_result.status)
    return Verdict(status, check_result.message, next_action if status is not Status.OK else "", details=details)


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f} ms"


def _number(value: Any) -> float | None:
    """A JSON number from the worker, or None (null, NaN, missing)."""
    if value is None or isinstance(value, bool):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


# ---- morning: the 8 steps before market open -------------------------------------------------------------------


@check("worker running", "≥ 1 worker with a live heartbeat, answering /health")
def check_worker_running(sources: Sources) -> Verdict:
    """Step 1: the service is up — heartbeats in Redis and an answer on the HTTP port."""
    consumers: dict[str, dict[str, Any]] | None = None
    redis_error = None
    try:
        consumers = live_consumers(sources.redis())
    except REDIS_DOWN as exc:
        redis_error = str(exc)
    try:
        _status, body = sources.health()
    except WorkerUnreachable as exc:
        if consumers:
            where = ", ".join(
                f"{name} (pid {beat.get('pid')} on {beat.get('host')})" for name, beat in consumers.items()
            )
            if isinstance(exc, WorkerNotAnswering):  # its heartbeat outlives a hang or a SIGSTOP by its TTL
                return Verdict(Status.CRITICAL, f"heartbeat from {where}, but its HTTP does not answer: {exc}",
                               WORKER_HUNG_ACTION, details={"live_consumers": sorted(consumers)})
            return Verdict(Status.CRITICAL, f"heartbeat from {where}, but HTTP unreachable: {exc}",
                           "the worker runs but its HTTP endpoint does not answer: check --worker-url / "
                           "TACTICAL_WORKER_URL and TACTICAL_HTTP_ADDR; `tacticalctl triage worker-down`",
                           details={"live_consumers": sorted(consumers)})
        reason = f"no live heartbeat in Redis and {exc}" if redis_error is None else f"{exc}; {redis_error}"
        if isinstance(exc, WorkerNotAnswering):
            return Verdict(Status.CRITICAL, f"worker not responding: {reason}", WORKER_HUNG_ACTION)
        return Verdict(Status.CRITICAL, f"no worker running: {reason}",
                       "start the service: `docker compose up -d tactical-marl` (or `tactical-worker`); "
                       "`tacticalctl triage worker-down`")
    uptime = _number(body.get("uptime_s"))
    value = f"{body.get('consumer')} up {_duration(uptime or 0.0)}"
    details: dict[str, Any] = {"consumer": body.get("consumer"), "uptime_s": uptime}
    if consumers is not None:
        value += f"; {len(consumers)} live worker(s) by heartbeat"
        details["live_consumers"] = sorted(consumers)
        if not consumers:
            return Verdict(Status.WARN, value + " — but no heartbeat in Redis",
                           "the worker answers HTTP but does not beat: check its Redis connection (`tacticalctl "
                           "health state`)", details=details)
    return Verdict(Status.OK, value, details=details)


@check("Redis ping (db 2)")
def check_redis_ping(sources: Sources, samples: int = 3) -> Verdict:
    """Step 2: PING on the runbook's database, best of `samples` round trips."""
    client = sources.redis()
    rtts = []
    for _ in range(samples):
        started = time.perf_counter()
        client.ping()
        rtts.append((time.perf_counter() - started) * 1e3)
    rtt = min(rtts)
    db = selected_db(client)
    threshold = (f"≤ {THRESHOLDS.redis_rtt_warn_ms:g} ms (warn above), ≤ {THRESHOLDS.redis_rtt_critical_ms:g} ms "
                 f"(critical above); db {DEFAULT_DB}")
    details = {"rtt_ms": rtt, "db": db}
    if rtt > THRESHOLDS.redis_rtt_critical_ms:
        return Verdict(Status.CRITICAL, f"PONG in {rtt:.2f} ms (db {db})",
                       "Redis is slow: `tacticalctl triage p99-latency` (INFO, SLOWLOG, latency)", threshold, details)
    if rtt > THRESHOLDS.redis_rtt_warn_ms:
        return Verdict(Status.WARN, f"PONG in {rtt:.2f} ms (db {db})",
                       "watch Redis load: `tacticalctl triage p99-latency`", threshold, details)
    if db != DEFAULT_DB:
        return Verdict(Status.WARN, f"PONG in {rtt:.2f} ms, but on db {db}",
                       f"the runbook's database is {DEFAULT_DB}: fix --redis-url (…/{DEFAULT_DB})", threshold, details)
    return Verdict(Status.OK, f"PONG in {rtt:.2f} ms (db {db})", threshold=threshold, details=details)


@dataclass(frozen=True, slots=True)
class JitLogStatus:
    path: Path
    exists: bool
    successful: bool
    failure: str | None  # the line saying why not, when the log has one

    def as_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "exists": self.exists, "successful": self.successful,
                "failure": self.failure}


def jit_log_status(bundle_dir: Path) -> JitLogStatus:
    """What the bundle's `jit_compilation.log` says: successful, failed (and why), or missing."""
    path = Path(bundle_dir) / JIT_LOG_FILE
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        return JitLogStatus(path, False, False, None)
    failure = next((line for line in reversed(lines) if JIT_FAILURE_MARK in line), None)
    successful = failure is None and any(JIT_SUCCESS_MARK in line for line in lines)
    return JitLogStatus(path, True, successful, failure)


@check("JIT compilation", f"log says \"{JIT_SUCCESS_MARK}\"; every SHA-256 matches the manifest")
def check_jit_compilation(sources: Sources) -> Verdict:
    """Step 3: the current bundle's JIT log says it compiled, and its files are the ones the manifest pins. The
    bundle is the one a worker starts on (`serving_bundle_dir`): without CURRENT, among several, there is none."""
    try:
        bundle_dir = serving_bundle_dir(sources.models_dir)
    except BundleError as exc:
        return Verdict(Status.CRITICAL, f"no usable bundle: {exc}", "`tacticalctl models list`; "
                       "`tacticalctl triage model-staleness`")
    log = jit_log_status(bundle_dir)
    details: dict[str, Any] = {"bundle_dir": str(bundle_dir), "jit_log": log.as_dict()}
    try:
        manifest = verify_bundle(bundle_dir)
    except BundleError as exc:
        return Verdict(Status.CRITICAL, f"{bundle_dir.name}: {exc}",
                       "do not load it: `tacticalctl triage model-compilation`; revert with "
                       "`tacticalctl models rollback --yes` (to the bundle CURRENT replaced when promoted) or "
                       "`tacticalctl models rollback <version> --yes`", details=details)
    if not log.exists:
        return Verdict(Status.WARN, f"{manifest.version}: hashes verified, but {JIT_LOG_FILE} is missing",
                       f"`tacticalctl models compile {manifest.version}` writes a fresh bundle with its log",
                       details=details)
    if not log.successful:
        return Verdict(Status.CRITICAL, f"{manifest.version}: {log.failure or 'the log never says it succeeded'}",
                       "`tacticalctl triage model-compilation`", details=details)
    value = f"{manifest.version}: {JIT_SUCCESS_MARK}, {len(manifest.agents)} hashes verified"
    try:
        _status, body = sources.health()
    except WorkerUnreachable:
        body = {}
    loaded = body.get("model_version")
    details["loaded_version"] = loaded
    if loaded and loaded != manifest.version:
        return Verdict(Status.WARN, f"{value}; but the worker runs {loaded}",
                       "the worker picks up CURRENT within its model poll; if it does not, "
                       "`tacticalctl triage model-staleness`", details=details)
    return Verdict(Status.OK, value, details=details)


@check("overnight performance")
def check_overnight_performance(sources: Sources, since_s: float) -> Verdict:
    """Step 4: decisions, executions, latency and dead letters since `since_s` seconds ago, from the streams.

    The runbook's P99/P50 bounds judge the worker's own time on an event (its stage timings up to the commit; the
    worker's latency metric adds the commit's round trip), as its health check does. The end-to-end time (event
    written → decision written) includes queueing: one overnight outage would hold it over 100 ms all day; queueing
    past the lag's critical bound is a warning of its own."""
    now_ms = int(sources.now() * 1000)
    summary = read_performance(sources.redis(), now_ms - int(since_s * 1000), now_ms)
    decisions = summary.decisions
    service, end_to_end = decisions.service, decisions.latency
    threshold = (f"worker's p99 ≤ {THRESHOLDS.p99_critical_ms:g} ms, p50 ≤ {THRESHOLDS.p50_warn_ms:g} ms; "
                 f"end to end p99 ≤ {THRESHOLDS.lag_critical_s:g} s; dead-lettered ≤ {THRESHOLDS.error_rate_warn:.0%}")
    details = summary.as_dict()
    if decisions.decisions == 0 and summary.dead_letters.count == 0:
        return Verdict(Status.OK, f"no events in the last {_duration(since_s)}", threshold=threshold, details=details)
    value = (f"{decisions.decisions} decisions, {decisions.executed} executed, worker's p50 {_ms(service.p50_ms)}, "
             f"p99 {_ms(service.p99_ms)}; end to end p99 {_ms(end_to_end.p99_ms)}; "
             f"{summary.dead_letters.count} dead letters in {_duration(since_s)}")
    if decisions.truncated:
        value += " (latest entries only)"
    if service.p99_ms is not None and service.p99_ms > THRESHOLDS.p99_critical_ms:
        return Verdict(Status.CRITICAL, value, "`tacticalctl triage p99-latency`; the daily report's hourly P99 "
                       "shows when (`tacticalctl eod`)", threshold, details)
    if service.p50_ms is not None and service.p50_ms > THRESHOLDS.p50_warn_ms:
        return Verdict(Status.WARN, value, "`tacticalctl triage p50-latency`", threshold, details)
    if end_to_end.p99_ms is not None and end_to_end.p99_ms > THRESHOLDS.lag_critical_s * 1000:
        return Verdict(Status.WARN, value + " (events queued: a worker down or lagging)",
                       "when and why: `tacticalctl alerts --count 50`, the daily report's hourly end-to-end P99 "
                       "(`tacticalctl eod`); `tacticalctl triage consumer-lag` if it goes on", threshold, details)
    error_rate = summary.error_rate
    if error_rate is not None and error_rate > THRESHOLDS.error_rate_warn:
        return Verdict(Status.WARN, value + f" ({error_rate:.1%} dead-lettered)",
                       "`tacticalctl dead-letter list` for the reasons; `tacticalctl triage error-rate`",
                       threshold, details)
    return Verdict(Status.OK, value, threshold=threshold, details=details)


@check("/health", "status pass (warn: degraded, fail: critical or failed)")
def check_health_endpoint(sources: Sources) -> Verdict:
    """Step 5: GET /health."""
    http_status, body = sources.health()
    status = Status.of(health_level(http_status, body))
    value = f"HTTP {http_status} {body.get('status')}: {body.get('state')} (model {body.get('model_version')})"
    actions = {Status.WARN: "`tacticalctl health state` shows the failing checks, or the recovery under way",
               Status.CRITICAL: "`tacticalctl triage health-stuck`"}
    return Verdict(status, value, actions.get(status, ""), details=dict(body))


RECOVERING_ACTION = "no check fails: it steps back on its own if they keep passing — `tacticalctl health state --watch`"


def _recovering(recovery: object, now: float) -> str:
    """Every check passes but the state is not healthy: it is on its way back (one step per recovery period)."""
    step = recovery if isinstance(recovery, dict) else {}
    due = _number(step.get("next_step_at"))
    return "; recovering" if due is None else f"; recovering: to {step.get('to')} in {_duration(max(0.0, due - now))}"


@check("/health/state", "every health check ok")
def check_health_state(sources: Sources) -> Verdict:
    """Step 6: GET /health/state — the state, each health check, the recent transitions."""
    state = sources.state()
    checks = state.get("health_checks") or []
    failing = [c for c in checks if c.get("status") != CheckStatus.OK.value]
    statuses = [Status(c["status"]) if c.get("status") in {s.value for s in Status} else Status.UNKNOWN
                for c in failing]
    code = int(state.get("state_code", 0))
    if code >= 2:
        statuses.append(Status.CRITICAL)
    elif code == 1:
        statuses.append(Status.WARN)
    status = worst(statuses)
    transitions = state.get("recent_transitions") or []
    value = f"{state.get('state')} ({len(checks)} checks, {len(failing)} not ok, {len(transitions)} transitions)"
    if failing:
        value += ": " + "; ".join(f"{c.get('name')} {c.get('status')}: {c.get('message')}" for c in failing)
    action = "" if status is Status.OK else "`tacticalctl triage` picks the alert from the failing checks"
    recovery = state.get("recovery")
    if status is not Status.OK and not failing:
        value += _recovering(recovery, sources.now())
        action = RECOVERING_ACTION
    return Verdict(status, value, action, details={"state": state.get("state"), "failing": failing,
                                                   "recovery": recovery})


@check("stale processing keys", "none: every processing key's owner has a live heartbeat")
def check_stale_processing_keys(sources: Sources) -> Verdict:
    """Step 7: processing keys whose owner is gone (they make redeliveries look like duplicates in flight)."""
    stale = find_stale_processing_keys(sources.redis())
    if not stale:
        return Verdict(Status.OK, "none")
    owners = sorted({k.owner or "?" for k in stale})
    return Verdict(Status.WARN, f"{len(stale)} stale processing key(s) owned by {', '.join(owners[:5])}",
                   "`tacticalctl keys clean` (shows the plan), then `tacticalctl keys clean --yes`",
                   details={"keys": [k.as_dict() for k in stale[:50]]})


def _alerts_since(client: redis.Redis, since_s: float, now: float) -> list[Alert]:
    return read_alert_history(client, int((now - since_s) * 1000), int(now * 1000))


@check("breaker and alert history", "breaker closed; restarts below the limit; no P0 alert")
def check_breaker_history(sources: Sources, since_s: float) -> Verdict:
    """Step 8: the circuit breaker on every worker, its restart count, and the P0/P1 alerts since `since_s` ago."""
    client = sources.redis()
    try:
        http = sources.state().get("circuit_breaker")
        http_error = None
    except WorkerUnreachable as exc:
        http, http_error = None, str(exc)
    now = sources.now()
    overview = read_breaker_overview(client, http=http, http_error=http_error, now=now)
    alerts = _alerts_since(client, since_s, now)
    p0 = [a for a in alerts if a.severity == Severity.P0]
    p1 = [a for a in alerts if a.severity == Severity.P1]
    state = overview.state
    value = (f"breaker {'unknown' if state is None else state.name.lower()}; {overview.restarts} restart(s) in "
             f"{_duration(overview.restart_window_s)} (limit {overview.restart_limit}); {len(p0)} P0 / {len(p1)} P1 "
             f"alerts in {_duration(since_s)}")
    details: dict[str, Any] = {"breaker": overview.as_dict(), "p0": [a.as_dict() for a in p0[-10:]],
                               "p1": [a.as_dict() for a in p1[-10:]]}
    if state is BreakerState.OPEN or overview.over_restart_limit:
        return Verdict(Status.CRITICAL, value, "`tacticalctl triage breaker-open`", details=details)
    # Every worker start is counted, so the starts of the workers running now are expected.
    unexpected_restarts = max(0, overview.restarts - len(overview.published))
    details["unexpected_restarts"] = unexpected_restarts
    if state is BreakerState.HALF_OPEN or p0 or unexpected_restarts or overview.next_start_opens:
        if overview.next_start_opens:
            value += "; at the restart limit: the next worker start opens the breaker"
        return Verdict(Status.WARN, value, "review: `tacticalctl alerts` and `tacticalctl breaker history`",
                       details=details)
    if state is None:
        return Verdict(Status.WARN, value + " (no live worker has published its breaker)",
                       "`tacticalctl triage worker-down`", details=details)
    return Verdict(Status.OK, value, details=details)


# ---- market hours: every 15 minutes ----------------------------------------------------------------------------


def _window(sources: Sources) -> Mapping[str, Any]:
    return sources.state().get("window") or {}


@check("P99 latency", f"p99 ≤ {THRESHOLDS.p99_critical_ms:g} ms (critical), p50 ≤ {THRESHOLDS.p50_warn_ms:g} ms "
       "(warn), last 60 s")
def check_p99_latency(sources: Sources) -> Verdict:
    window = _window(sources)
    p50, p99 = _number(window.get("p50_ms")), _number(window.get("p99_ms"))
    result = health_check_latency(p50, p99, THRESHOLDS)
    action = ("`tacticalctl triage p99-latency`" if result.status is CheckStatus.CRITICAL
              else "`tacticalctl triage p50-latency`")
    return _from_health(result, action, p50_ms=p50, p99_ms=p99, events=window.get("events"))


@check("consumer lag", f"≤ {THRESHOLDS.lag_warn_s:g} s (warn above), ≤ {THRESHOLDS.lag_critical_s:g} s "
       "(critical above)")
def check_consumer_lag(sources: Sources) -> Verdict:
    try:
        lag = read_consumer_lag(sources.redis())
    except LagUnavailable as exc:
        return Verdict(Status.WARN, f"lag unknown: {exc}", "`tacticalctl stream info`")
    verdict = _from_health(health_check_consumer_lag(lag.seconds, THRESHOLDS),
                           "`tacticalctl lag watch`; `tacticalctl triage consumer-lag`", **lag.as_dict())
    value = f"{lag.seconds:.2f} s; {lag.count_text} undelivered, {lag.pending} pending"
    return Verdict(verdict.status, value, verdict.next_action, details=verdict.details)


@check("active positions", "reported by the worker")
def check_active_positions(sources: Sources) -> Verdict:
    positions = sources.state().get("positions") or {}
    active = positions.get("active")
    if active is None:
        return Verdict(Status.UNKNOWN, "the worker does not report positions", "`tacticalctl health state --json`")
    pnl = _number(positions.get("realised_pnl"))
    value = f"{active} open" + ("" if pnl is None else f", realised P&L {pnl:.2f}")
    return Verdict(Status.OK, value, details=dict(positions))


@check("error rate", f"≤ {THRESHOLDS.error_rate_warn:.0%} over the last 60 s")
def check_error_rate(sources: Sources) -> Verdict:
    rate = _number(_window(sources).get("error_rate"))
    errors = sources.state().get("window_errors")
    by_operation = ({str(k): int(v) for k, v in errors.items() if isinstance(v, int | float)}
                    if isinstance(errors, dict) else None)
    return _from_health(health_check_error_rate(rate, THRESHOLDS, errors=by_operation),
                        "`tacticalctl triage error-rate`", error_rate=rate)


@check("model confidence", f"mean ≥ {THRESHOLDS.confidence_warn:g} over the last 60 s")
def check_model_confidence(sources: Sources) -> Verdict:
    mean = _number(_window(sources).get("mean_confidence"))
    return _from_health(health_check_confidence(mean, THRESHOLDS), "`tacticalctl triage low-confidence`",
                        mean_confidence=mean)


def health_state_named(name: object) -> HealthState | None:
    """The health state /health/state names (`healthy` … `failed`); None for a name it does not know."""
    return HealthState.__members__.get(str(name).upper())


def flapping(transitions: Sequence[Mapping[str, Any]]) -> bool:
    """Whether the health state got worse again after it had got better: away and back, then away again. One round
    trip, however many steps it took (degraded, critical, back), is a blip to review, not flapping;
    TacticalHealthStateTransition (P2) tells the team channel of any transition."""
    improved = False
    for transition in transitions:
        came_from, to = health_state_named(transition.get("from")), health_state_named(transition.get("to"))
        if came_from is None or to is None:
            continue
        if to < came_from:
            improved = True
        elif to > came_from and improved:
            return True
    return False


@check("health state transitions", "state healthy; in the last 15 min not worse again after recovering (else "
       "flapping: warn)")
def check_health_transitions(sources: Sources, window_s: float = MARKET_WINDOW_S) -> Verdict:
    state = sources.state()
    now = sources.now()
    recent = [t for t in state.get("recent_transitions") or [] if (_number(t.get("at")) or 0.0) >= now - window_s]
    code = int(state.get("state_code", 0))
    since = _number(state.get("since"))
    value = (f"{state.get('state')}" + ("" if since is None else f" for {_duration(max(0.0, now - since))}")
             + f"; {len(recent)} transition(s) in {_duration(window_s)}")
    if recent:
        value += ": " + ", ".join(f"{t.get('from')}→{t.get('to')}" for t in recent[-5:])
    details = {"state_code": code, "transitions": recent}
    checks = state.get("health_checks") or []
    if code >= 1 and checks and all(c.get("status") == CheckStatus.OK.value for c in checks):
        # Every check passes (after a restore, say: the old backlog made it critical, then was decided at once).
        details["recovery"] = state.get("recovery")
        return Verdict(Status.CRITICAL if code >= 2 else Status.WARN, value + _recovering(state.get("recovery"), now),
                       RECOVERING_ACTION, details=details)
    if code >= 2:
        return Verdict(Status.CRITICAL, value, "`tacticalctl triage health-stuck`", details=details)
    if code == 1:
        return Verdict(Status.WARN, value, "`tacticalctl health state` for the failing checks", details=details)
    if flapping(recent):
        return Verdict(Status.WARN, value + " (flapping)", "a check moves around its threshold: `tacticalctl triage "
                       "health-transitions`", details=details)
    return Verdict(Status.OK, value, "`tacticalctl health state` to review them" if recent else "", details=details)


@check("duplicate events", "no correlation id with two execution commands; none sent twice in the window (warn)")
def check_duplicate_alerts(sources: Sources, window_s: float = MARKET_WINDOW_S) -> Verdict:
    """The runbook's duplicate-processing alert, judged from the streams: what TacticalDuplicateEvents fires on (the
    worker caught a copy) is an id sent more than once among the window's input entries; two commands for one id
    anywhere in the recent ones is exactly-once output broken."""
    client = sources.redis()
    scan = scan_window(client, window_s)
    commands, resent = scan.commands, scan.resent
    # Each worker counts only the copies it caught itself: every live one is read (the one at --worker-url first).
    fleet = fleet_duplicate_events(client, sources.worker_url, metrics=sources.metrics, health=sources.health,
                                   timeout_s=sources.http_timeout_s)
    counted = fleet.total
    caught = fleet.summary() + (f" ({fleet.shortfall()})" if fleet.unread else "")
    value = (f"{len(resent.offenders)} correlation id(s) sent more than once in {_duration(window_s)} "
             f"({resent.scanned} events{', the newest' if resent.truncated else ''}); {caught}; "
             f"{len(commands.offenders)} repeated command(s) in {_duration(window_s)} ({commands.scanned} commands"
             f"{', the newest' if commands.truncated else ''})")
    details = {"duplicate_events_total": counted, "duplicate_commands": commands.as_dict(),
               "resent_in_window": resent.as_dict()}
    window = f"--window {window_s / 60:g}m"
    if commands.offenders:
        return Verdict(Status.CRITICAL, value, "two trades for one event: `tacticalctl triage duplicate-processing` "
                       "and stop the executor from acting on them", details=details)
    if resent.offenders:
        return Verdict(Status.WARN, value, f"an upstream resending events: `tacticalctl duplicates {window}` for the "
                       "ids (each was decided once)", details=details)
    return Verdict(Status.OK, value, details=details)


@check("circuit breaker", "closed on every worker")
def check_breaker_status(sources: Sources) -> Verdict:
    overview = sources.breaker_overview()
    state = overview.state
    if state is None:
        return Verdict(Status.CRITICAL,
                       "no live worker has published its breaker and the worker does not answer: "
                       f"{overview.http_error}",
                       "`tacticalctl triage worker-down`", details=overview.as_dict())
    verdict = _from_health(health_check_breaker(state), "`tacticalctl triage breaker-open`", **overview.as_dict())
    workers = ", ".join(f"{name} {status.state.name.lower()}" for name, status in overview.published.items())
    value = f"{state.name.lower()}" + (f" ({workers})" if workers else "")
    if verdict.status is Status.OK and overview.next_start_opens:  # as `tacticalctl breaker status` warns
        reached = "at" if overview.restarts == overview.restart_limit else "past"
        return Verdict(Status.WARN, value + f"; {reached} the restart limit ({overview.restarts} starts in "
                       f"{_duration(overview.restart_window_s)}, limit {overview.restart_limit}): the next worker "
                       "start opens the breaker", "find why workers restarted (`tacticalctl breaker history`), then "
                       "`tacticalctl breaker reset --yes` clears the count", details=verdict.details)
    return Verdict(verdict.status, value, verdict.next_action, details=verdict.details)


# ---- end of day ------------------------------------------------------------------------------------------------


@check("daily performance report", "written to --report-dir (markdown and JSON)")
def check_daily_report(sources: Sources, *, since_s: float, report_dir: Path) -> Verdict:
    """Build the day's report from the streams and write it; its data rides along in `details["report"]`."""
    client = sources.redis()
    # Each worker counts only its own duplicates and errors: the report sums every live worker's.
    fleet = read_fleet_metrics(client, sources.worker_url, metrics=sources.metrics, health=sources.health,
                               timeout_s=sources.http_timeout_s)
    now_ms = int(sources.now() * 1000)
    report = build_daily_report(client, now_ms - int(since_s * 1000), now_ms, fleet=fleet)
    markdown, data_file = write_report(report, report_dir)
    data = report.as_dict()
    service, latency = data["service"], data["latency"]
    value = (f"{data['decisions']} decisions, {data['executed']} executed, worker's p99 {_ms(service['p99_ms'])}, "
             f"end to end p99 {_ms(latency['p99_ms'])}, "
             f"{data['errors']['dead_letters']['count']} dead letters → {markdown}")
    details = {"markdown": str(markdown), "json": str(data_file), "report": data}
    doubled = [o["correlation_id"] for o in data["duplicates"]["commands"]["offenders"]]
    if doubled:
        return Verdict(Status.CRITICAL, value + f"; {len(doubled)} correlation id(s) with more than one execution "
                       f"command: {', '.join(doubled[:5])}", "two trades for one event: `tacticalctl triage "
                       "duplicate-processing`, and reconcile them with the executor", details=details)
    missing = dict.fromkeys([worker.name for worker in report.duplicate_events.missing]
                            + [worker.name for worker in report.worker_errors.missing])
    if missing:
        return Verdict(Status.WARN, value + f" (worker counters missing: {', '.join(missing)} not read)",
                       "the report's duplicate and error sums lack their counters; it says why each was not read",
                       details=details)
    return Verdict(Status.OK, value, details=details)


NO_REPORT = Verdict(Status.UNKNOWN, "no daily report to read (see the report step)", "fix the report step first")


@check("degradation patterns", f"the worker's hourly p99 ≤ {THRESHOLDS.p99_critical_ms:g} ms")
def check_degradation(report: Mapping[str, Any] | None) -> Verdict:
    """The worker's P99 by hour (its own time, as the runbook's bound means it): hours over the limit, and the trend
    of the last hours."""
    if report is None:
        return NO_REPORT
    hourly = report["hourly"]
    slow_hours = [h for h in hourly
                  if h["service_p99_ms"] is not None and h["service_p99_ms"] > THRESHOLDS.p99_critical_ms]
    trend = " → ".join(_ms(h["service_p99_ms"]) for h in hourly[-6:]) or "no decisions"
    value = f"the worker's hourly p99 {trend}; {len(slow_hours)} hour(s) over {THRESHOLDS.p99_critical_ms:g} ms"
    details = {"slow_hours": slow_hours}
    if slow_hours:
        return Verdict(Status.WARN, value, "find what ran then (report's transitions, dead letters); "
                       "`tacticalctl triage p99-latency` if it persists", details=details)
    return Verdict(Status.OK, value, details=details)


@check("health state transitions", "no move to critical or failed today")
def check_transitions_of_day(report: Mapping[str, Any] | None) -> Verdict:
    """The health and breaker transitions the worker alerted today, counted by move."""
    if report is None:
        return NO_REPORT
    moves = report["transitions"]
    health = [t for t in moves if t["kind"] == "health_transition"]
    breaker = [t for t in moves if t["kind"] != "health_transition"]
    by_move = Counter(f"{t.get('from')}→{t.get('to')}" for t in health)
    value = (f"{len(health)} health transition(s)" + (f" ({', '.join(f'{m} ×{n}' for m, n in by_move.items())})"
                                                      if by_move else "")
             + f"; {len(breaker)} breaker event(s)")
    details = {"health": health, "breaker": breaker}
    severe = [t for t in health if t.get("to") in ("critical", "failed")]
    if severe:
        return Verdict(Status.WARN, value, "read why in the report (each transition has its reason); recurring "
                       "causes go to the on-call review", details=details)
    return Verdict(Status.OK, value, details=details)


@check("model update", f"loaded bundle is CURRENT and confirmed within {THRESHOLDS.model_staleness_critical_s / 60:g}"
       " min")
def check_model_update(sources: Sources) -> Verdict:
    """The runbook's "update model if needed": is a newer verified bundle waiting, is the loaded one CURRENT and
    confirmed? CURRENT's files are checked against its manifest: a worker keeps serving the bundle it loaded when
    CURRENT stops verifying, so its staleness stays low for 15 minutes, but a restarted worker refuses it."""
    models_dir = sources.models_dir
    try:  # what a worker starts on: without CURRENT, the only bundle; among several, none (it does not guess)
        current_dir = serving_bundle_dir(models_dir)
        current = read_manifest(current_dir)
    except BundleError as exc:
        return Verdict(Status.CRITICAL, f"no usable bundle: {exc}", "`tacticalctl triage model-staleness`")
    value = f"CURRENT {current.version} (created {current.created_at:%Y-%m-%d %H:%M}Z)"
    try:
        verify_bundle(current_dir)
    except BundleError as exc:
        return Verdict(Status.CRITICAL, f"{value} does not verify: {exc}: a restarted worker refuses it",
                       "`tacticalctl models verify`; revert with `tacticalctl models rollback <version> --yes`",
                       details={"current": current.version, "problem": str(exc)})
    newer = waiting_bundles(sources, current)
    details: dict[str, Any] = {"current": current.version, "newer": [m.version for m in newer]}
    try:
        model = sources.state().get("model") or {}
    except WorkerUnreachable as exc:  # which bundle is loaded, and whether it is confirmed, only the worker knows
        return Verdict(Status.CRITICAL, value + f"; loaded bundle unknown: {exc}", "`tacticalctl triage worker-down`",
                       details=details)
    staleness = _number(model.get("staleness_s"))
    details["loaded"] = model.get("version")
    details["staleness_s"] = staleness
    if staleness is not None and staleness > THRESHOLDS.model_staleness_critical_s:
        return Verdict(Status.CRITICAL, value + f"; loaded bundle not confirmed for {_duration(staleness)}",
                       "`tacticalctl triage model-staleness`", details=details)
    loaded = model.get("version")
    if loaded is not None and loaded != current.version:
        problem = model.get("problem")
        return Verdict(Status.WARN, value + f"; but the worker runs {loaded}" + (f": {problem}" if problem else ""),
                       "the worker picks up CURRENT within its model poll; if it does not, "
                       "`tacticalctl triage model-staleness`", details=details)
    if newer:
        return Verdict(Status.WARN, value + f"; newer bundle(s): {', '.join(m.version for m in newer[:3])}",
                       f"verify and promote: `tacticalctl models promote {newer[0].version} --yes`", details=details)
    return Verdict(Status.OK, value + ("" if model.get("version") is None else f"; loaded {model.get('version')}"),
                   details=details)


def waiting_bundles(sources: Sources, current: Manifest) -> list[Manifest]:
    """Bundles newer than CURRENT that could be promoted: their hashes and JIT log are good, and no operator has
    already ruled them out (refused, or rolled back from: `models.bundle_history`). Without Redis, the audit trail
    is not consulted."""
    try:
        ruled_out = decided_versions(sources.redis(), sources.models_dir)
    except REDIS_DOWN:
        ruled_out = set()
    return [m for m in servable_bundles(sources.models_dir)
            if m.created_at > current.created_at and m.version not in ruled_out]


def servable_bundles(models_dir: Path) -> list[Manifest]:
    """Bundles a worker would load, newest first: every file matches its hash and the JIT log says it succeeded.
    Signatures are checked with this process's key (TACTICAL_MODEL_SIGNING_KEY_FILE); without one, a signed CURRENT
    says the workers have a key, and an unsigned bundle is not offered (they would refuse it)."""
    return bundles_by_signature(models_dir)[0]


def bundles_by_signature(models_dir: Path) -> tuple[list[Manifest], list[Manifest]]:
    """The bundles whose files verify and whose JIT log succeeded, newest first, in two lists: those a worker
    would load (`servable_bundles`), and those it would refuse only for want of a signature (a signed CURRENT and
    none of their own: signing one makes it servable)."""
    servable: list[Manifest] = []
    unsigned: list[Manifest] = []
    signed_fleet = signed_current_version(models_dir) is not None
    for manifest in list_bundles(models_dir):
        if manifest.bundle_dir is None:
            continue
        lacks_signature = signed_fleet and not (manifest.bundle_dir / SIGNATURE_FILE).is_file()
        try:
            if lacks_signature:
                verify_bundle(manifest.bundle_dir, signing_key=None)
            else:
                verify_bundle(manifest.bundle_dir)
        except BundleError:
            continue
        if jit_log_status(manifest.bundle_dir).successful:
            (unsigned if lacks_signature else servable).append(manifest)
    return servable, unsigned


@check("backups", "Redis persistence: last RDB save / AOF write ok; a `tacticalctl backup` within 26 h")
def check_backups(sources: Sources) -> Verdict:
    """The runbook's "verify backup processes completed": Redis reports its last save and AOF writes as ok, and the
    daily archive (`tacticalctl backup`, audited as kind=backup) ran within BACKUP_MAX_AGE_S."""
    info = sources.redis().info("persistence")
    problems = []
    if info.get("rdb_last_bgsave_status", "ok") != "ok":
        problems.append(f"last RDB save {info.get('rdb_last_bgsave_status')}")
    if int(info.get("aof_enabled", 0)) and info.get("aof_last_write_status", "ok") != "ok":
        problems.append(f"last AOF write {info.get('aof_last_write_status')}")
    if int(info.get("aof_enabled", 0)) and info.get("aof_last_bgrewrite_status", "ok") != "ok":
        problems.append(f"last AOF rewrite {info.get('aof_last_bgrewrite_status')}")
    # rdb_last_save_time is Redis's start when it has not saved since: rdb_saves (Redis 7; saves since the start)
    # tells the two apart, and keys loaded at the start show an earlier save (a restart from dump.rdb).
    saves = int(info.get("rdb_saves", 1))
    loaded = int(info.get("rdb_last_load_keys_loaded", 0))
    never_saved = not saves and not loaded
    if saves:
        saved = datetime.fromtimestamp(int(info.get("rdb_last_save_time", 0)), UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    else:
        saved = "never" if never_saved else f"none since Redis started (it loaded {loaded} keys from disk)"
    value = f"AOF {'on' if int(info.get('aof_enabled', 0)) else 'off'}; last RDB save {saved}"
    details = {k: info.get(k) for k in ("aof_enabled", "rdb_last_bgsave_status", "aof_last_write_status",
                                        "aof_last_bgrewrite_status", "rdb_saves", "rdb_last_save_time",
                                        "rdb_last_load_keys_loaded", "rdb_changes_since_last_save")}
    if problems:
        return Verdict(Status.CRITICAL, value + ": " + "; ".join(problems),
                       "check the Redis log and disk space; see README (Backup)", details=details)
    if not int(info.get("aof_enabled", 0)) and never_saved:
        return Verdict(Status.WARN, value + ": nothing persisted", "enable AOF or RDB; see README (Backup)",
                       details=details)
    archive = latest_backup(sources.redis())
    details["last_archive"] = None if archive is None else {"at": archive.ts, **archive.fields}
    if archive is None:
        latest = "none recorded"
    else:
        age_s = sources.clock() - entry_time_ms(archive.id) / 1e3
        if age_s <= BACKUP_MAX_AGE_S:
            return Verdict(Status.OK, value + f"; last archive {archive.fields.get('archive', '?')} "
                           f"({_duration(age_s)} ago)", details=details)
        latest = f"latest {archive.ts} ({_duration(age_s)} ago)"
    return Verdict(Status.WARN, value + f"; no `tacticalctl backup` in {BACKUP_MAX_AGE_S // 3600} h ({latest})",
                   "`tacticalctl backup /backups/tactical-$(date -u +%Y%m%dT%H%MZ).tar.gz` (runbook: Backup "
                   "Procedures)", details=details)


BACKUP_MAX_AGE_S = 26 * 3600  # the runbook's daily archive, with slack for a run that starts late
BACKUP_SCAN = 10_000  # newest tactical_alerts entries searched for it


def latest_backup(client: redis.Redis) -> Alert | None:
    """The newest `tacticalctl backup` recorded in tactical_alerts (among the newest BACKUP_SCAN entries)."""
    return next((a for a in reversed(recent_alerts(client, count=BACKUP_SCAN)) if a.kind == BACKUP_ACTION), None)


@check("old idempotency keys", "stale processing keys and completed keys past --older-than removed")
def cleanup_old_keys(
    sources: Sources, *, older_than_s: float, apply: bool, actor: str, completed_ttl_s: float | None = None
) -> Verdict:
    """Stale processing keys and completed keys past `older_than_s` (dry run unless `apply`; audited when it acts).
    `completed_ttl_s` dates completed keys whose value is not a decision id."""
    client = sources.redis()
    plan = plan_key_cleanup(scan_idempotency_keys(client, completed_ttl_s=completed_ttl_s),
                            older_than_s=older_than_s)
    counts = f"{len(plan.stale_processing)} stale processing, {len(plan.old_completed)} completed older than " \
             f"{_duration(older_than_s)}"
    if not plan.keys:
        return Verdict(Status.OK, f"nothing to clean ({counts})", details=plan.as_dict())
    if not apply:
        return Verdict(Status.WARN, f"would delete {counts} (dry run)", "rerun with --yes to delete them",
                       details=plan.as_dict())
    result = clean_keys(client, plan, actor=actor, apply=True)
    if result.audit_error:
        return Verdict(Status.WARN, f"deleted {len(result.deleted)} key(s) ({counts}); audit entry not written: "
                       f"{result.audit_error}", "the deletion stands: record it by hand", details=result.as_dict())
    return Verdict(Status.OK, f"deleted {len(result.deleted)} key(s) ({counts}); audit {result.audit_id}",
                   details=result.as_dict())


@check("breaker counters", "reset only when every breaker is closed and there was no P0 today")
def reset_breaker_counters(sources: Sources, *, since_s: float, apply: bool, actor: str) -> Verdict:
    client = sources.redis()
    now = sources.now()
    try:
        http = sources.state().get("circuit_breaker")
    except WorkerUnreachable:
        http = None
    overview = read_breaker_overview(client, http=http, now=now)
    p0 = [a for a in _alerts_since(client, since_s, now) if a.severity == Severity.P0]
    details = {"breaker": overview.as_dict(), "p0_today": len(p0)}
    if overview.state in (BreakerState.OPEN, BreakerState.HALF_OPEN):
        return Verdict(Status.WARN, f"not reset: breaker {overview.state.name.lower()}",
                       "find the cause first: `tacticalctl triage breaker-open`", details=details)
    running = len(overview.published)
    if overview.restarts <= running:  # only the starts of the workers running now: nothing abnormal to clear
        return Verdict(Status.OK, f"nothing to reset: {overview.restarts} start(s) counted for {running} running "
                       "worker(s)", details=details)
    if p0:
        return Verdict(Status.WARN, f"not reset: {len(p0)} P0 alert(s) today (latest: {p0[-1].message})",
                       "review them (`tacticalctl alerts`); reset by hand once understood: "
                       "`tacticalctl breaker reset --yes`", details=details)
    if not apply:
        return Verdict(Status.WARN, f"would reset {overview.restarts} restart(s) (dry run)",
                       "rerun with --yes to reset", details=details)
    receipt = reset_breaker(client, actor=actor)
    return Verdict(Status.OK, f"reset {overview.restarts} restart(s); request {receipt.request_id}, audit "
                   f"{receipt.audit_id}", details={**details, "reset": receipt.as_dict()})


STDIN_LOG = Path("-")  # --log-file -: the log piped in (a container's log comes from `docker-compose logs`)
STDIN_LOG_NAME = "worker.log"


@check("log archive", "--log-file copied and compressed into --report-dir")
def archive_log(log_file: Path | None, report_dir: Path, *, date: str, stdin: BinaryIO | None = None) -> Verdict:
    if log_file is None:
        return Verdict(Status.OK, "skipped: no --log-file given",
                       "pass --log-file (e.g. the worker's log, or - to read it from stdin) to archive it")
    piped = log_file == STDIN_LOG
    if not piped and not log_file.is_file():
        if log_file.exists():  # a directory, a device (/dev/zero would be copied for ever), a FIFO
            return Verdict(Status.WARN, f"{log_file} is not a regular file",
                           "pass the log file itself, or - to read the log from stdin")
        return Verdict(Status.WARN, f"{log_file} does not exist", "check the --log-file path")
    report_dir.mkdir(parents=True, exist_ok=True)
    target = report_dir / f"{STDIN_LOG_NAME if piped else log_file.name}.{date}.gz"
    with (contextlib.nullcontext(stdin or sys.stdin.buffer) if piped else log_file.open("rb")) as source, \
            gzip.open(target, "wb") as archive:
        shutil.copyfileobj(source, archive)
    size = target.stat().st_size
    shown = "stdin" if piped else str(log_file)
    return Verdict(Status.OK, f"{shown} → {target} ({size} bytes)", details={"archive": str(target)})


__all__ = [
    "JIT_SUCCESS_MARK",
    "CheckResult",
    "JitLogStatus",
    "Status",
    "Verdict",
    "archive_log",
    "bundles_by_signature",
    "check",
    "check_active_positions",
    "check_backups",
    "check_breaker_history",
    "check_breaker_status",
    "check_consumer_lag",
    "check_daily_report",
    "check_degradation",
    "check_duplicate_alerts",
    "check_error_rate",
    "check_health_endpoint",
    "check_health_state",
    "check_health_transitions",
    "check_jit_compilation",
    "check_model_confidence",
    "check_model_update",
    "check_overnight_performance",
    "check_p99_latency",
    "check_redis_ping",
    "check_stale_processing_keys",
    "check_transitions_of_day",
    "check_worker_running",
    "cleanup_old_keys",
    "jit_log_status",
    "latest_backup",
    "reset_breaker_counters",
    "servable_bundles",
    "waiting_bundles",
    "worst",
]
