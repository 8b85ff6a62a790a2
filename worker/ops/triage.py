"""On-call triage: for each alert of the runbook, its diagnosis steps as code, the findings, and what to do.

An alert's playbook is a list of probes (`worker.ops.probes`) and the runbook's solutions, made concrete as
`tacticalctl` commands. `pick_alerts` reads the current state and names the playbooks worth running when the
operator does not know which alert fired. Prometheus alert names (`TacticalP99LatencyHigh`, …, from
runbook/prometheus/alerts.yml) are accepted as aliases.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import redis

from models.bundle import BundleError, current_bundle_dir, verify_bundle
from worker.breaker import BreakerState
from worker.heartbeat import live_consumers
from worker.lag import LagUnavailable, read_consumer_lag
from worker.ops.breaker_status import read_breaker_overview
from worker.ops.checks import Status, jit_log_status, worst
from worker.ops.duplicates import window_commands, window_resends
from worker.ops.keys import find_stale_processing_keys
from worker.ops.probes import (
    THRESHOLDS,
    Finding,
    Probe,
    number,
    playbook_for_check,
    probe_alert_history,
    probe_breaker,
    probe_bundle,
    probe_confidence,
    probe_duplicates,
    probe_errors,
    probe_fleet_latency,
    probe_health_state,
    probe_heartbeats,
    probe_latency,
    probe_model_staleness,
    probe_pending,
    probe_previous_bundles,
    probe_redis,
    probe_stream,
    probe_worker_http,
    probe_worker_process,
    run_probe,
)
from worker.ops.sources import RedisUnavailable, Sources
from worker.ops.worker_client import WorkerUnreachable
from worker.settings import default_models_dir

RUNBOOK = "runbook/RUNBOOK.md"


@dataclass(frozen=True, slots=True)
class TriageReport:
    alert: str
    title: str
    severity: str
    runbook: str
    findings: tuple[Finding, ...]
    actions: tuple[str, ...]
    reason: str = ""  # why `pick_alerts` chose it; empty when the operator named the alert

    @property
    def status(self) -> Status:
        return worst([finding.status for finding in self.findings])

    def as_dict(self) -> dict[str, Any]:
        return {
            "alert": self.alert,
            "title": self.title,
            "severity": self.severity,
            "runbook": self.runbook,
            "status": self.status.value,
            "reason": self.reason,
            "findings": [finding.as_dict() for finding in self.findings],
            "actions": list(self.actions),
        }


# ---- playbooks ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Playbook:
    name: str
    title: str
    severity: str
    anchor: str
    aliases: tuple[str, ...]
    probes: tuple[Probe, ...]
    actions: tuple[str, ...]

    @property
    def runbook(self) -> str:
        return f"{RUNBOOK}#{self.anchor}"


PLAYBOOKS: tuple[Playbook, ...] = (
    Playbook(
        "worker-down", "Worker down", "P0", "worker-down", ("TacticalWorkerDown",),
        (probe_heartbeats, probe_worker_http, probe_redis),
        (
            "Start the service: `docker compose up -d tactical-marl` (or run `tactical-worker`)",
            "Read why it stopped: `docker compose logs --tail=100 tactical-marl`",
            "Entries it held are reclaimed by a live worker after the min-idle; check with `tacticalctl pending`",
            "If it keeps dying, the restart limit opens the breaker: `tacticalctl breaker status`",
        ),
    ),
    Playbook(
        "p99-latency", "P99 latency > 100ms", "P0", "p99-latency--100ms", ("TacticalP99LatencyHigh",),
        (probe_latency, probe_fleet_latency, probe_worker_process, probe_redis, probe_errors),
        (
            "Respond within 2 minutes. Which stage is slow: `tacticalctl latency --window 30`",
            "CPU-bound worker: scale out (`docker compose up -d --scale tactical-marl=2`) or move competing load",
            "Slow Redis (round trip, SLOWLOG): fix Redis or the network first",
            "Verify the models: `tacticalctl models verify`",
            "If it persists, restart: `docker compose restart tactical-marl`",
            "Escalate to the on-call engineer if not resolved within 5 minutes",
        ),
    ),
    Playbook(
        "p50-latency", "P50 latency > 50ms", "P1", "p50-latency--50ms", ("TacticalP50LatencyHigh",),
        (probe_latency, probe_fleet_latency, probe_worker_process, probe_redis),
        (
            "Monitor for escalation to the P99 alert: `tacticalctl latency --window 60`",
            "Check resource usage (the findings above) and recent changes (`tacticalctl alerts --severity AUDIT`, "
            "`tacticalctl models list`)",
            "Prepare a restart: `docker compose restart tactical-marl`",
        ),
    ),
    Playbook(
        "consumer-lag", "Consumer lag > 5 seconds", "P0", "consumer-lag--5-seconds", ("TacticalConsumerLagCritical",),
        (probe_redis, probe_stream, probe_pending, probe_heartbeats),
        (
            "Respond within 1 minute. Watch it: `tacticalctl lag watch`",
            "Stream and group state: `tacticalctl stream info`; stuck entries: `tacticalctl pending --extended`",
            "Hand stuck entries of a dead consumer to a live one: `tacticalctl pending claim --to <consumer> --yes`",
            "Restart the worker if the lag keeps increasing: `docker compose restart tactical-marl`",
            "If persistent, scale consumers: `docker compose up -d --scale tactical-marl=2`",
        ),
    ),
    Playbook(
        "consumer-lag-warning", "Consumer lag > 2 seconds", "P1", "consumer-lag--2-seconds",
        ("TacticalConsumerLagWarning",),
        (probe_redis, probe_stream, probe_pending, probe_heartbeats),
        (
            "Watch the trend: `tacticalctl lag watch` (warn = falling behind, stall/stop = not acknowledging)",
            "The P0 alert fires at 5 s; diagnose as for it if the lag keeps growing: `tacticalctl triage consumer-lag`",
        ),
    ),
    Playbook(
        "event-rate", "Event rate < 50/s", "P1", "event-rate--50s", ("TacticalEventRateLow",),
        (probe_stream, probe_latency, probe_worker_process),
        (
            "Throughput, not demand, is short: `tacticalctl lag watch` shows rates in and out",
            "Find the slow stage: `tacticalctl latency --window 30`",
            "Add consumers: `docker compose up -d --scale tactical-marl=2`",
        ),
    ),
    Playbook(
        "model-staleness", "Model staleness > 15 minutes", "P0", "model-staleness--15-minutes",
        ("TacticalModelStale",),
        (probe_model_staleness, probe_bundle, probe_previous_bundles),
        (
            "Respond within 5 minutes. Check the model pipeline: `tacticalctl models list`",
            "Verify the current bundle: `tacticalctl models verify`",
            "Reload a verified bundle (the worker loads it without a restart): `tacticalctl models rollback --yes` "
            "(the bundle CURRENT replaced when promoted) or `tacticalctl models rollback <version> --yes` (a version "
            "from `tacticalctl models list`)",
            "Do not restart while `tacticalctl models verify` is critical: a running worker keeps its last good "
            "bundle, a restarted one refuses to start without one",
            "Contact the ML team if no verified model is available",
        ),
    ),
    Playbook(
        "error-rate", "Error rate > 5%", "P1", "error-rate--5", ("TacticalErrorRateHigh",),
        (probe_errors, probe_redis, probe_worker_http),
        (
            "Error patterns: `tacticalctl dead-letter list` (reasons), the worker's log (`docker compose logs "
            "tactical-marl | grep ERROR`)",
            "Data quality: bad input is dead-lettered with its reason; fix the producer and have it send those "
            "events again, corrected (`tacticalctl dead-letter replay --all --yes` replays only what is valid now)",
            "External connectivity: the Redis findings above",
            "Monitor for escalation: `tacticalctl market-check`",
        ),
    ),
    Playbook(
        "low-confidence", "Model confidence < 0.6", "P1", "model-confidence--06", ("TacticalModelConfidenceLow",),
        (probe_confidence,),
        (
            "Review market conditions (a quiet or choppy market lowers confidence legitimately)",
            "Check data feed quality: `tacticalctl stream info`, `tacticalctl dead-letter list`",
            "Verify the model inputs and the bundle: `tacticalctl models verify`",
            "Consider a model refresh: `tacticalctl models list`, then `tacticalctl models promote <version> --yes`",
        ),
    ),
    Playbook(
        "breaker-open", "Circuit breaker open", "P0", "circuit-breaker-open", ("TacticalCircuitBreakerOpen",),
        (probe_breaker, probe_alert_history, probe_redis, probe_worker_http),
        (
            "Identify the root cause: the breaker's last reason above, `tacticalctl breaker history`, "
            "`tacticalctl alerts`",
            "Fix the underlying issue (Redis, models, poison events: `tacticalctl pending --extended`)",
            "Then reset it: `tacticalctl breaker reset --yes` (audited; events waited in the stream)",
            "Consider scaling resources; review the restart policy (TACTICAL_BREAKER_RESTART_LIMIT, "
            "TACTICAL_BREAKER_RESTART_WINDOW_S)",
        ),
    ),
    Playbook(
        "duplicate-processing", "Duplicate event processing", "P2", "duplicate-events",
        ("TacticalDuplicateEvents",),
        (probe_duplicates, probe_heartbeats),
        (
            "Clean up stale processing keys: `tacticalctl keys clean`, then `tacticalctl keys clean --yes`",
            "Verify correlation id generation: `tacticalctl duplicates` lists the repeated ids; `tacticalctl decision "
            "<correlation-id>` shows what one was decided each time, with its commands",
            "Check the TTL settings (TACTICAL_COMPLETED_TTL_S, TACTICAL_PROCESSING_LEASE_MS): `tacticalctl keys list`",
            "Review the event producer's retry logic",
            "Two commands for one id break exactly-once: stop the executor acting on them and escalate",
        ),
    ),
    Playbook(
        "health-stuck", "Health state machine stuck", "P0", "health-state-critical-or-failed",
        ("TacticalHealthCritical",),
        # The heartbeats name each worker's pid and host: a hung one is what the actions' py-spy dump needs.
        (probe_health_state, probe_heartbeats, probe_redis, probe_breaker),
        (
            "Work on the failing checks above, if any: each names its triage. With none failing, the state is "
            "recovering on its own (the finding above says when)",
            "Review the thresholds (worker/health.py `Thresholds`) if a check flaps around its limit",
            "Watch the recovery: `tacticalctl health state --watch` (recovery is one step per 30 s of good checks)",
            "Restart the service to restart health monitoring: `docker compose restart tactical-marl`",
        ),
    ),
    Playbook(
        "health-transitions", "Health state transitions", "P2", "health-state-transitions",
        ("TacticalHealthStateTransition",),
        (probe_health_state, probe_alert_history),
        (
            "Which check moved the state, and how often: `tacticalctl health state`, "
            "`tacticalctl alerts --severity P1 --severity P2`",
            "Frequent moves mean a check flaps around its threshold: review it (worker/health.py `Thresholds`)",
            "If the state is critical or failed, work it as stuck: `tacticalctl triage health-stuck`",
        ),
    ),
    Playbook(
        "model-compilation", "Model compilation failures", "P0", "model-compilation-failures", (),
        (probe_bundle, probe_previous_bundles),
        (
            "Verify the bundle and read its JIT log: `tacticalctl models verify`",
            "Recompile with the installed torch: `tacticalctl models compile <version>`",
            "Revert to the previous version: `tacticalctl models rollback --yes` (or `… rollback <version> --yes`)",
            "Rebuild the container if torch is broken: `docker compose build tactical-marl`",
            "Contact the ML team",
        ),
    ),
)

_BY_KEY: dict[str, Playbook] = {}
for _playbook in PLAYBOOKS:
    for _key in (_playbook.name, *_playbook.aliases):
        _BY_KEY[_key.lower()] = _playbook


class UnknownAlert(LookupError):
    """No playbook for that alert name; the message lists the names there are."""


def alert_names() -> list[str]:
    return [playbook.name for playbook in PLAYBOOKS]


def resolve_alert(name: str) -> Playbook:
    """The playbook for a runbook alert name or a Prometheus alert name (case-insensitive, _ or -)."""
    key = name.strip().lower().replace("_", "-")
    playbook = _BY_KEY.get(key) or _BY_KEY.get(name.strip().lower())
    if playbook is None:
        raise UnknownAlert(f"no triage for {name!r}: use one of {', '.join(alert_names())} "
                           "(or a Prometheus alert name such as TacticalP99LatencyHigh)")
    return playbook


def _unique(findings: Iterable[Finding]) -> tuple[Finding, ...]:
    seen: set[str] = set()
    unique = []
    for finding in findings:
        if finding.summary not in seen:
            seen.add(finding.summary)
            unique.append(finding)
    return tuple(unique)


def triage(sources: Sources, name: str, *, reason: str = "") -> TriageReport:
    playbook = resolve_alert(name)
    findings = _unique([finding for probe in playbook.probes for finding in run_probe(probe, sources)])
    actions = playbook.actions
    if sources.models_dir.resolve() != default_models_dir():  # pasted as shown, a command acts on these bundles
        findings = tuple(replace(f, summary=_naming_models_dir(f.summary, sources.models_dir)) for f in findings)
        actions = tuple(_naming_models_dir(action, sources.models_dir) for action in actions)
    return TriageReport(playbook.name, playbook.title, playbook.severity, playbook.runbook, findings, actions, reason)


_MODELS_COMMAND = re.compile(r"(`[^`]*\btacticalctl models [^`]*)`")


def _naming_models_dir(text: str, models_dir: Path) -> str:
    """Each `tacticalctl models …` command quoted in `text`, with `--models-dir` naming `models_dir`."""
    named = f"--models-dir {shlex.quote(str(models_dir))}"
    return _MODELS_COMMAND.sub(
        lambda match: match.group(0) if "--models-dir" in match.group(1) else f"{match.group(1)} {named}`", text)


# ---- which alerts apply now --------------------------------------------------------------------------------------


def alerts_from_state(state: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(alert, why) for what a `/health/state` document shows past the runbook's thresholds."""
    picks = []
    window = state.get("window") or {}
    p50, p99 = number(window.get("p50_ms")), number(window.get("p99_ms"))
    if p99 is not None and p99 > THRESHOLDS.p99_critical_ms:
        picks.append(("p99-latency", f"p99 {p99:.1f} ms > {THRESHOLDS.p99_critical_ms:g} ms"))
    elif p50 is not None and p50 > THRESHOLDS.p50_warn_ms:
        picks.append(("p50-latency", f"p50 {p50:.1f} ms > {THRESHOLDS.p50_warn_ms:g} ms"))
    model = state.get("model") or {}
    staleness = number(model.get("staleness_s"))
    if staleness is not None and staleness > THRESHOLDS.model_staleness_critical_s:
        picks.append(("model-staleness", f"model not confirmed for {staleness:.0f} s"))
    elif model.get("problem"):
        picks.append(("model-staleness", str(model["problem"])))
    error_rate = number(window.get("error_rate"))
    if error_rate is not None and error_rate > THRESHOLDS.error_rate_warn:
        picks.append(("error-rate", f"error rate {error_rate:.1%}"))
    confidence = number(window.get("mean_confidence"))
    if confidence is not None and confidence < THRESHOLDS.confidence_warn:
        picks.append(("low-confidence", f"mean confidence {confidence:.2f}"))
    breaker = (state.get("circuit_breaker") or {}).get("state")
    if breaker and breaker != "closed":
        picks.append(("breaker-open", f"breaker {breaker}"))
    if int(state.get("state_code", 0)) >= 2:
        picks.append(("health-stuck", f"health state {state.get('state')}"))
    picks += _alerts_from_checks(state)
    return picks


def _alerts_from_checks(state: Mapping[str, Any]) -> list[tuple[str, str]]:
    picks = []
    for check in state.get("health_checks") or ():
        status = check.get("status")
        if status not in ("warn", "critical"):
            continue
        picks.append((playbook_for_check(str(check.get("name")), str(status)),
                      f"{check.get('name')}: {check.get('message')}"))
    if not picks and int(state.get("state_code", 0)) == 1:
        picks.append(("health-transitions", "health state degraded"))
    return picks


def pick_alerts(sources: Sources) -> list[tuple[str, str]]:
    """(alert, why) for every playbook the current state calls for, most urgent first, each once."""
    picks: list[tuple[str, str]] = []
    try:
        client = sources.redis()
    except RedisUnavailable as exc:
        client = None
        picks.append(("consumer-lag", str(exc)))
    try:
        state: Mapping[str, Any] | None = sources.state()
    except WorkerUnreachable as exc:
        state = None
        picks.append(("worker-down", str(exc)))
    if state is not None:
        picks += alerts_from_state(state)
    if client is not None:
        picks += _pick_from_redis(sources, client)
    try:
        bundle_dir = current_bundle_dir(sources.models_dir)
        verify_bundle(bundle_dir)
        if not jit_log_status(bundle_dir).successful:
            picks.append(("model-compilation", f"{bundle_dir.name}: JIT log does not say it compiled"))
    except BundleError as exc:
        picks.append(("model-compilation", str(exc)))
    chosen: dict[str, str] = {}
    for name, why in picks:
        chosen.setdefault(name, why)
    order = {playbook.name: index for index, playbook in enumerate(PLAYBOOKS)}
    return sorted(chosen.items(), key=lambda item: order[item[0]])


def _pick_from_redis(sources: Sources, client: redis.Redis) -> list[tuple[str, str]]:
    picks = []
    try:
        lag = read_consumer_lag(client)
        if lag.seconds > THRESHOLDS.lag_warn_s:
            picks.append(("consumer-lag", f"consumer lag {lag.seconds:.1f} s"))
    except (LagUnavailable, redis.ResponseError):
        # Not there, or refused (an ACL without XINFO, say): no backlog to treat, and the lag playbook's actions
        # (restart, scale) are not what a refusal needs; the Redis probes of any playbook name the refusal.
        pass
    overview = read_breaker_overview(client, http=None, now=sources.now())
    if overview.state in (BreakerState.OPEN, BreakerState.HALF_OPEN):
        picks.append(("breaker-open", f"breaker {overview.state.name.lower()} (published in Redis)"))
    elif overview.over_restart_limit:
        picks.append(("breaker-open", f"{overview.restarts} restarts exceed the limit of {overview.restart_limit}"))
    elif overview.next_start_opens:  # `breaker status` and the checklists warn of it too
        picks.append(("breaker-open", f"{overview.restarts} restarts reach the limit of {overview.restart_limit}: "
                                      "the next worker start opens the breaker"))
    if not live_consumers(client):
        picks.append(("worker-down", "no worker has a live heartbeat"))
    stale = find_stale_processing_keys(client)
    if stale:
        picks.append(("duplicate-processing", f"{len(stale)} stale processing key(s) with a dead owner"))
    elif window_commands(client).offenders:
        picks.append(("duplicate-processing", "repeated execution commands"))
    elif resent := window_resends(client).offenders:  # what TacticalDuplicateEvents and market-check watch
        picks.append(("duplicate-processing", f"{len(resent)} correlation id(s) sent more than once in the last "
                                              "15 minutes"))
    return picks


def triage_current(sources: Sources) -> list[TriageReport]:
    """Every playbook the current state calls for, run."""
    return [triage(sources, name, reason=why) for name, why in pick_alerts(sources)]


def worst_of(reports: Sequence[TriageReport]) -> Status:
    return worst([report.status for report in reports])


__all__ = [
    "PLAYBOOKS",
    "Finding",
    "Playbook",
    "TriageReport",
    "UnknownAlert",
    "alert_names",
    "alerts_from_state",
    "pick_alerts",
    "resolve_alert",
    "run_probe",
    "triage",
    "triage_current",
    "worst_of",
]
